"""What makes a checkpoint directory complete: every rank writes a manifest of the files it
wrote (sizes and SHA-256 sums) beside them (trainer/checkpoint.py), and a checkpoint is
complete when every rank's manifest is there and every file it lists matches, so a write
interrupted half way is never mistaken for a good checkpoint. The driver reads these to
choose where to resume without importing the training stack; a checkpoint may be a local
directory or a URI (rundir/store.py: one code path for both)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from rundir.layout import CHECKPOINT_GLOB
from rundir.store import Location, open_location

TAG = "deepspeed"  # fixed DeepSpeed tag: one checkpoint per Ray checkpoint directory
UNIVERSAL_TAG = "universal"  # the folder ds_to_universal writes, beside the RNG states
MANIFEST = "manifest-rank{rank}.json"
MANIFEST_GLOB = "manifest-rank*.json"


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or corrupt; the message names the checkpoint and file."""


@dataclass
class CheckpointInfo:
    path: str  # a local directory (absolute) or a URI (rundir/store.py)
    step: int
    world_size: int
    global_batch: int | None = None  # samples per optimizer step (None: an older checkpoint)

    @property
    def name(self) -> str:
        return open_location(self.path).name


def sha256_of(location: Location) -> str:
    """The SHA-256 of one file, local or at a URI, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with location.fs.open_input_stream(location.path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(
    directory: Path, rank: int, world_size: int, step: int, global_batch: int
) -> None:
    """Lists what this rank wrote (files of other ranks land in their own directories)."""
    manifest = {
        "rank": rank,
        "world_size": world_size,
        "step": step,
        "global_batch": global_batch,
        "files": file_entries(directory),
    }
    (directory / MANIFEST.format(rank=rank)).write_text(json.dumps(manifest, indent=1))


def file_entries(directory: Path) -> dict[str, dict]:
    """Every file under ``directory`` (relative name -> bytes and SHA-256), sorted: what a
    checkpoint manifest lists, and what a pipeline stage's manifest fingerprints."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {
        str(p.relative_to(directory)): {
            "bytes": p.stat().st_size,
            "sha256": sha256_of(open_location(p)),
        }
        for p in files
    }


def read_checkpoint_info(path: str | Path | Location) -> CheckpointInfo:
    """The step, world size and global batch the manifests record, after checking that
    every rank's manifest is there; the files themselves are not read (verify_checkpoint)."""
    where = open_location(path)
    manifests = where.files(MANIFEST_GLOB)
    if not manifests:
        raise CheckpointError(f"checkpoint {where} has no manifest (incomplete write?)")
    first = manifests[0].read_json()
    world = first["world_size"]
    if len(manifests) != world:
        raise CheckpointError(
            f"checkpoint {where} has {len(manifests)} of {world} rank manifests (incomplete write?)"
        )
    return CheckpointInfo(where.uri, first["step"], world, first.get("global_batch"))


def verify_checkpoint(path: str | Path | Location, hashes: bool = True) -> CheckpointInfo:
    """Raises CheckpointError naming the first missing, truncated or corrupt file.
    ``hashes=False`` checks sizes only (one listing): what the driver does for a checkpoint
    at a URI, which it would otherwise download whole; the workers hash what they fetch."""
    where = open_location(path)
    info = read_checkpoint_info(where)
    found = {i.path: i for i in where.entries(recursive=True) if i.type == pafs.FileType.File}
    for manifest in where.files(MANIFEST_GLOB):
        for name, meta in manifest.read_json()["files"].items():
            file = where.child(*name.split("/"))
            stat = found.get(file.path)
            if stat is None:
                raise CheckpointError(f"checkpoint {where}: {name} is missing")
            if stat.size != meta["bytes"]:
                raise CheckpointError(
                    f"checkpoint {where}: {name} has {stat.size} "
                    f"bytes, the manifest says {meta['bytes']}"
                )
            if hashes and sha256_of(file) != meta["sha256"]:
                raise CheckpointError(
                    f"checkpoint {where}: {name} fails its SHA-256 check (corrupt)"
                )
    return info


def latest_complete(
    run_dir: str | Path | Location, hashes: bool = True
) -> tuple[CheckpointInfo | None, list[str]]:
    """The newest complete checkpoint of a run, and why each newer one was skipped."""
    skipped = []
    for candidate in reversed(open_location(run_dir).dirs(CHECKPOINT_GLOB)):
        try:
            return verify_checkpoint(candidate, hashes), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    return None, skipped
