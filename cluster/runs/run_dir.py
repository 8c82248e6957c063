"""Run directories: unique names, and a writability check before any work.

``output_dir`` may also be a storage URI (s3://, gs://, ...): then the run lives at
``<output_dir>/<experiment>/<run_name>`` and the driver and rank 0 write a local mirror of it
(cluster/runs/storage.py).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from pathlib import Path

from cluster.runs import storage
from rundir import layout
from rundir.store import Location, first_line, open_location
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig

CLAIM = ".zeroray-claim-"  # a run name's lock object (``reserve``)


def check_writable(directory: str, key: str) -> None:
    if storage.is_uri(directory):
        storage.check_writable_uri(directory, key)
        return
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".zeroray-write-test-{time.time_ns()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"{key}={directory!r} is not writable ({e.strerror}); allowed: a "
            "directory this user can create and write"
        ) from None


def new_run_dir(cfg: TrainJobConfig) -> tuple[str, Path]:
    """(run_name, run_dir). A new timestamp unless named; an existing run is never reused
    (Ray Train would silently resume it) nor overwritten: of two runs racing for one name,
    the second is refused (or, unnamed, takes the next suffix). Local paths and URIs take
    the same path (``reserve``). With a URI output_dir, run_dir is the run's local mirror
    (cluster/runs/storage.py)."""
    try:
        experiment = open_location(cfg.output_dir).child(cfg.experiment)
        name = cfg.run_name or time.strftime("%Y%m%d-%H%M%S")
        if cfg.run_name is None:
            base, n = name, 1
            while not reserve(experiment.child(name)):
                n += 1
                name = f"{base}-{n}"
        elif not reserve(experiment.child(name)):
            raise ConfigError(
                f"run_name={name!r} already exists in {experiment}; allowed: a "
                "new name (existing runs are never overwritten)"
            )
    except OSError as e:  # StoreError, or a store refusing a listing or a write
        raise ConfigError(
            f"output_dir={cfg.output_dir!r}: {first_line(e)}; allowed: a location this "
            "machine can write"
        ) from None
    if not storage.is_uri(cfg.output_dir):
        return name, Path(experiment.child(name).path)
    mirror = storage.mirror_dir(cfg.cache_dir, experiment.child(name).uri)
    shutil.rmtree(mirror, ignore_errors=True)  # a stale copy of a run deleted at the URI
    return name, mirror


def reserve(run: Location) -> bool:
    """Claim the run directory ``run``; False if it exists or another run claimed it first.

    pyarrow.fs offers no conditional create (S3's If-None-Match, GCS's ifGenerationMatch=0)
    and no atomic mkdir on object stores, so a claim is a lock object plus a listing: write
    a claim of our own, then list; we hold the name only if ours is the only thing there.
    Of two racers, whichever lists second sees the other's claim (the other wrote it before
    its own listing), so at most one wins; both may lose, and then both are refused or
    move on. This needs a listing that sees every finished write: true of local disks,
    S3 (strongly consistent since 2020-12), GCS, Azure Blob and MinIO."""
    if run.exists() and any(not i.base_name.startswith(CLAIM) for i in run.entries()):
        return False  # a run is there
    claim = run.child(f"{CLAIM}{uuid.uuid4().hex}")
    claim.write_bytes(b"")
    if [i.base_name for i in run.entries()] == [claim.name]:
        return True
    claim.delete_file()
    return False


def release_unused(run_dir: Path, run: str | None = None) -> None:
    """Gives a reserved run name back when the run failed before writing anything in it:
    ``run`` is where it lives (its URI; by default ``run_dir`` itself)."""
    where = open_location(run or run_dir)
    try:
        entries = where.entries()
        if all(i.base_name.startswith(CLAIM) for i in entries):  # nothing of a run is removed
            for entry in entries:
                where.fs.delete_file(entry.path)
    except OSError:
        pass
    try:
        run_dir.rmdir()  # only an empty directory
    except OSError:
        pass


def save_resolved_config(cfg: TrainJobConfig, run_dir: Path) -> None:
    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(dataclasses.asdict(cfg)), run_dir / layout.CONFIG)
