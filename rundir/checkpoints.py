"""What makes a checkpoint directory complete: every rank writes a manifest of the files it
wrote (sizes and SHA-256 sums) beside them (trainer/checkpoint.py), and a checkpoint is
complete when every rank's manifest is there and every file it lists matches, so a write
interrupted half way is never mistaken for a good checkpoint. The driver reads these to
choose where to resume without importing the training stack."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rundir.layout import CHECKPOINT_GLOB

TAG = "deepspeed"  # fixed DeepSpeed tag: one checkpoint per Ray checkpoint directory
UNIVERSAL_TAG = "universal"  # the folder ds_to_universal writes, beside the RNG states
MANIFEST = "manifest-rank{rank}.json"


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


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The step, world size and global batch the manifests record, after checking that
    every rank's manifest is there; the files themselves are not read (verify_checkpoint)."""
    path = Path(path)
    manifests = sorted(path.glob("manifest-rank*.json"))
    if not manifests:
        raise CheckpointError(f"checkpoint {path} has no manifest (incomplete write?)")
    first = json.loads(manifests[0].read_text())
    world = first["world_size"]
    if len(manifests) != world:
        raise CheckpointError(
            f"checkpoint {path} has {len(manifests)} of {world} rank manifests (incomplete write?)"
        )
    return CheckpointInfo(path, first["step"], world, first.get("global_batch"))


def verify_checkpoint(path: str | Path) -> CheckpointInfo:
    """Raises CheckpointError naming the first missing, truncated or corrupt file."""
    info = read_checkpoint_info(path)
    for manifest in sorted(info.path.glob("manifest-rank*.json")):
        for name, meta in json.loads(manifest.read_text())["files"].items():
            file = info.path / name
            if not file.is_file():
                raise CheckpointError(f"checkpoint {info.path}: {name} is missing")
            if file.stat().st_size != meta["bytes"]:
                raise CheckpointError(
                    f"checkpoint {info.path}: {name} has {file.stat().st_size} "
                    f"bytes, the manifest says {meta['bytes']}"
                )
            if _sha256(file) != meta["sha256"]:
                raise CheckpointError(
                    f"checkpoint {info.path}: {name} fails its SHA-256 check (corrupt)"
                )
    return info


def latest_complete(run_dir: str | Path) -> tuple[CheckpointInfo | None, list[str]]:
    """The newest complete checkpoint of a run, and why each newer one was skipped."""
    skipped = []
    for candidate in sorted(Path(run_dir).glob(CHECKPOINT_GLOB), reverse=True):
        try:
            return verify_checkpoint(candidate), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    return None, skipped
