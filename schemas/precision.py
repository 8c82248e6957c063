"""What a precision setting means, in one place for training, evaluation and serving."""

from __future__ import annotations

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_precision(precision: str, on_gpu: bool | None = None) -> str:
    """auto: bf16 where the GPU computes it natively, else fp32 (CPUs here would emulate
    bf16 slowly). ``on_gpu`` None = whether this process sees a CUDA device."""
    import torch

    if precision != "auto":
        return precision
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"


def torch_dtype(precision: str, on_gpu: bool | None = None):
    """The torch dtype of a precision setting (``auto`` resolved first)."""
    import torch

    resolved = resolve_precision(precision, on_gpu)
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[resolved]
