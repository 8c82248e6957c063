"""The resumable checkpoint (the other kind, the flat Hugging Face export, is export.py).

Every rank writes its own files (its DeepSpeed shard, its RNG states, and a
manifest of sizes and SHA-256 sums) into a local directory and reports it; Ray Train
gathers all ranks' files into one checkpoint directory in storage. Reporting only from
rank 0 would keep only rank 0's optimizer shard (ray#33369). A checkpoint is complete when
every rank's manifest is there and every file it lists matches: a write interrupted half
way is never mistaken for a good checkpoint. Loading one back is restore.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.train
import torch

TAG = "deepspeed"  # fixed DeepSpeed tag: one checkpoint per Ray checkpoint directory
UNIVERSAL_TAG = "universal"  # the folder ds_to_universal writes, beside the RNG states
MANIFEST = "manifest-rank{rank}.json"
# What DeepSpeed's ds_to_universal requires of a checkpoint's client state (its version key
# and value), so that any checkpoint can be resharded for another number of workers.
UNIVERSAL_INFO = {"universal_checkpoint_info": {"universal_checkpoint_version": 0.4}}


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or corrupt; the message names the checkpoint and file."""


@dataclass
class CheckpointInfo:
    path: Path
    step: int
    world_size: int
    global_batch: int | None = None  # samples per optimizer step (None: an older checkpoint)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def write_manifest(
    directory: Path, rank: int, world_size: int, step: int, global_batch: int
) -> None:
    """Lists what this rank wrote (files of other ranks land in their own directories)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    entries = {
        str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in files
    }
    manifest = {
        "rank": rank,
        "world_size": world_size,
        "step": step,
        "global_batch": global_batch,
        "files": entries,
    }
    (directory / MANIFEST.format(rank=rank)).write_text(json.dumps(manifest, indent=1))


def verify_checkpoint(path: str | Path) -> CheckpointInfo:
    """Raises CheckpointError naming the first missing, truncated or corrupt file."""
    path = Path(path)
    manifests = sorted(path.glob("manifest-rank*.json"))
    if not manifests:
        raise CheckpointError(f"checkpoint {path} has no manifest (incomplete write?)")
    first = json.loads(manifests[0].read_text())
    world, step = first["world_size"], first["step"]
    if len(manifests) != world:
        raise CheckpointError(
            f"checkpoint {path} has {len(manifests)} of {world} rank manifests (incomplete write?)"
        )
    for manifest in manifests:
        for name, meta in json.loads(manifest.read_text())["files"].items():
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"checkpoint {path}: {name} is missing")
            if file.stat().st_size != meta["bytes"]:
                raise CheckpointError(
                    f"checkpoint {path}: {name} has {file.stat().st_size} "
                    f"bytes, the manifest says {meta['bytes']}"
                )
            if _sha256(file) != meta["sha256"]:
                raise CheckpointError(
                    f"checkpoint {path}: {name} fails its SHA-256 check (corrupt)"
                )
    return CheckpointInfo(path, step, world, first.get("global_batch"))


def latest_complete(run_dir: str | Path) -> tuple[CheckpointInfo | None, list[str]]:
    """The newest complete checkpoint of a run, and why each newer one was skipped."""
    skipped = []
    for candidate in sorted(Path(run_dir).glob("step_*"), reverse=True):
        try:
            return verify_checkpoint(candidate), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    return None, skipped


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
            checkpoint_dir_name=f"step_{step:07d}",
        )
