"""Run directories: unique names, and a writability check before any work.

``output_dir`` may also be a storage URI (s3://, gs://, ...): then the run lives at
``<output_dir>/<experiment>/<run_name>`` and the driver and rank 0 write a local mirror of it
(cluster/runs/storage.py).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from cluster.runs import storage
from rundir import layout
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig


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
    (Ray Train would silently resume it) nor overwritten. A local run directory is reserved
    by creating it, which is atomic: of two runs racing for one name, the second is refused
    (or, unnamed, takes the next suffix). With a URI output_dir, run_dir is the run's local
    mirror (cluster/runs/storage.py) and names are checked at the URI, which cannot reserve one."""
    uri = storage.is_uri(cfg.output_dir)
    experiment_dir = (
        storage.join(cfg.output_dir, cfg.experiment)
        if uri
        else Path(cfg.output_dir) / cfg.experiment
    )

    def taken(name: str) -> bool:
        if uri:
            return storage.exists(storage.join(experiment_dir, name))
        experiment_dir.mkdir(parents=True, exist_ok=True)
        try:
            (experiment_dir / name).mkdir()
        except FileExistsError:
            return True
        return False

    name = cfg.run_name or time.strftime("%Y%m%d-%H%M%S")
    if cfg.run_name is None:
        base, n = name, 1
        while taken(name):
            n += 1
            name = f"{base}-{n}"
    elif taken(name):
        raise ConfigError(
            f"run_name={name!r} already exists in {experiment_dir}; allowed: a "
            "new name (existing runs are never overwritten)"
        )
    if not uri:
        return name, experiment_dir / name
    mirror = storage.mirror_dir(cfg.cache_dir, storage.join(experiment_dir, name))
    shutil.rmtree(mirror, ignore_errors=True)  # a stale copy of a run deleted at the URI
    return name, mirror


def release_unused(run_dir: Path) -> None:
    """Gives a reserved run name back when the run failed before writing anything in it."""
    try:
        run_dir.rmdir()  # only an empty directory: nothing of a run is ever removed
    except OSError:
        pass


def save_resolved_config(cfg: TrainJobConfig, run_dir: Path) -> None:
    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(dataclasses.asdict(cfg)), run_dir / layout.CONFIG)
