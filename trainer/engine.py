"""build_engine: model + optimizer parameter groups -> DeepSpeed engine."""

from __future__ import annotations

import importlib
import sys

import torch

from schemas.jobs import TrainJobConfig
from schemas.precision import resolve_precision, torch_dtype
from trainer.ds_config import build_ds_config
from trainer.model import build_model


def _import_deepspeed():
    """DeepSpeed with mlflow hidden while it loads. Its autotuner, imported with the package,
    imports mlflow whenever it is installed, only to log autotuning trials, which zeroray never
    runs: that was 1 s of every training worker's start (importing this module after
    trainer.loop, three alternating pairs: 3.3-3.4 s with mlflow, 2.1-2.5 s without). mlflow
    stays importable afterwards for whoever needs it (the tracking code imports it itself).
    Load this module before any thread that imports mlflow starts: such a thread would find
    it hidden (trainer/loop.py imports it before rank 0's tracker opens)."""
    hidden = "mlflow" not in sys.modules
    if hidden:
        sys.modules["mlflow"] = None  # makes `import mlflow` raise ImportError
    try:
        return importlib.import_module("deepspeed")
    finally:
        if hidden and "mlflow" in sys.modules and sys.modules["mlflow"] is None:
            del sys.modules["mlflow"]


deepspeed = _import_deepspeed()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases and norm weights are 1-D and get no weight decay.
    Under ZeRO-3 parameters are flattened partitions, so the true rank is in ds_shape."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        ndim = len(getattr(p, "ds_shape", p.shape))
        (decay if ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_engine(
    cfg: TrainJobConfig, tokenizer, world_size: int, on_gpu: bool, load_universal: bool = False
):
    """Returns (engine, ds_config). The same ds_config builds the model (ZeRO-3 init).
    With ``cfg.lora`` enabled the base weights are frozen and only the adapter trains."""
    # Before anything reads DeepSpeed's world size: HfDeepSpeedConfig (ZeRO-3 model build)
    # checks the batch arithmetic against it and would see a world of 1 otherwise. With a
    # process group already up (Ray Train's), this adopts it.
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    precision = resolve_precision(cfg.trainer.precision, on_gpu)
    ds_config = build_ds_config(
        cfg.deepspeed, cfg.trainer, cfg.optim, world_size, precision, on_gpu
    )
    if load_universal:  # the next load_checkpoint reads a universal checkpoint (resharding)
        ds_config["checkpoint"] = {"load_universal": True}
    model = build_model(
        cfg.model, tokenizer, ds_config, torch_dtype(precision), cfg.trainer.gradient_checkpointing
    )
    if cfg.lora.enabled:
        from trainer.lora import apply_lora

        model = apply_lora(model, cfg.lora)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, cfg.optim.weight_decay), config=ds_config
    )
    return engine, ds_config
