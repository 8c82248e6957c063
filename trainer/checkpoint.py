"""Two checkpoint kinds: resumable DeepSpeed shards (every rank) and the flat HF export.

Resumable: every rank writes its own shard files into a local directory and reports it;
Ray Train gathers all ranks' files into one checkpoint directory in storage. Reporting
only from rank 0 would keep only rank 0's optimizer shard (ray#33369).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray.train
import torch.distributed as dist

TAG = "deepspeed"  # fixed DeepSpeed tag: one checkpoint per Ray checkpoint directory


def save_and_report(engine, train_state: dict, metrics: dict, step: int) -> None:
    with tempfile.TemporaryDirectory(prefix="zeroray-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=TAG, client_state={"train_state": train_state})
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"step_{step:07d}",
        )


def restore_latest(engine) -> dict | None:
    """Load the newest reported checkpoint into ``engine``; its train_state, or None."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        _, client_state = engine.load_checkpoint(path, tag=TAG)
    if client_state is None:
        raise RuntimeError(f"checkpoint {checkpoint.path} has no DeepSpeed state under tag {TAG!r}")
    return client_state["train_state"]


def export_hf(engine, tokenizer, export_dir: str, zero_stage: int, rank: int) -> None:
    """A flat Hugging Face directory (safetensors, config, generation config, tokenizer)
    that `from_pretrained` loads with no project code. Collective under ZeRO-3."""
    state_dict = None
    if zero_stage == 3:
        # Each rank holds a slice of every parameter: gather them (on rank 0) first, or the
        # export would hold empty placeholders (ray#43285).
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if rank == 0:
        Path(export_dir).mkdir(parents=True, exist_ok=True)
        engine.module.save_pretrained(export_dir, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(export_dir)
    if dist.is_initialized():
        dist.barrier()
