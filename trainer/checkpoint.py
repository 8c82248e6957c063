"""The resumable checkpoint (the other kind, the flat Hugging Face export, is export.py).

Every rank writes its own files (its DeepSpeed shard, its RNG states, and a
manifest of sizes and SHA-256 sums: rundir/checkpoints.py) into a local directory and
reports it; Ray Train gathers all ranks' files into one checkpoint directory in storage.
Reporting only from rank 0 would keep only rank 0's optimizer shard (ray#33369). Loading one
back is restore.py.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import ray.train
import torch

from rundir.checkpoints import TAG, write_manifest
from rundir.layout import checkpoint_name

# What DeepSpeed's ds_to_universal requires of a checkpoint's client state (its version key
# and value), so that any checkpoint can be resharded for another number of workers.
UNIVERSAL_INFO = {"universal_checkpoint_info": {"universal_checkpoint_version": 0.4}}


def rng_state() -> dict:
    """Every RNG of this rank as tensors, ints and tuples only, so that loading it needs no
    unpickling of arbitrary objects (``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_and_report(
    engine, train_state: dict, metrics: dict, step: int, rank: int, world_size: int
) -> None:
    with tempfile.TemporaryDirectory(prefix="zeroray-ckpt-") as tmp:
        client_state = {"train_state": train_state, **UNIVERSAL_INFO}
        engine.save_checkpoint(tmp, tag=TAG, client_state=client_state)
        torch.save(rng_state(), Path(tmp) / f"rng-rank{rank}.pt")
        write_manifest(Path(tmp), rank, world_size, step, engine.train_batch_size())
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=checkpoint_name(step),
        )
