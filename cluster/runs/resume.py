"""resume=latest|PATH: pick the checkpoint to continue from, before any worker starts.

A resume continues in a new run directory (the old run is never written to): the metrics
history up to the checkpoint and the TensorBoard events are carried over, so the loss
curve continues, and Ray Train hands the chosen checkpoint to the workers.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from console import log
from rundir import layout
from rundir.checkpoints import (
    MANIFEST_GLOB,
    CheckpointError,
    CheckpointInfo,
    latest_complete,
    verify_checkpoint,
)
from rundir.metrics_file import copy_until
from rundir.store import Location, first_line, is_uri, open_location, probe
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig


def _newest_first(experiment: Location) -> list[Location]:
    return sorted(experiment.dirs(), key=Location.newest_mtime, reverse=True)


def choose_checkpoint(cfg: TrainJobConfig) -> CheckpointInfo:
    """resume=latest: the newest complete checkpoint of the experiment, saying what was
    skipped; resume=PATH|URI: that checkpoint (which must verify) or that run's newest.
    At a URI the driver checks manifests and sizes only (one listing, no download); the
    workers hash what they fetch (trainer/restore.py)."""
    try:
        return _choose(cfg)
    except OSError as e:  # StoreError, or a store refusing a listing or a read
        raise ConfigError(
            f"resume={cfg.resume}: {first_line(e)}; allowed: a location this machine can read"
        ) from None


def _choose(cfg: TrainJobConfig) -> CheckpointInfo:
    target = cfg.resume
    if target == "latest":
        experiment = probe(cfg.output_dir).child(cfg.experiment)
        hashes = not is_uri(cfg.output_dir)
        for run_dir in _newest_first(experiment):
            info, skipped = latest_complete(run_dir, hashes)
            for reason in skipped:
                log.info(f"resume=latest: skipping {reason}; trying an older one")
            if info:
                return info
        raise ConfigError(
            f"resume=latest: no complete checkpoint under {experiment}; "
            "allowed: an experiment with a checkpointed run, or resume=PATH"
        )
    where, hashes = probe(target), not is_uri(target)
    if where.files(MANIFEST_GLOB):
        try:
            return verify_checkpoint(where, hashes)
        except CheckpointError as e:
            raise ConfigError(f"resume={target}: {e}") from None
    info, skipped = latest_complete(where, hashes)
    if info is None:
        why = f" ({skipped[0]})" if skipped else ""
        raise ConfigError(
            f"resume={target}: no complete checkpoint there{why}; allowed: "
            "latest, a run directory or a step_* checkpoint directory"
        )
    for reason in skipped:
        log.info(f"resume: skipping {reason}; using {info.name}")
    return info


def carry_history(info: CheckpointInfo, new_run_dir: Path) -> None:
    """Metrics up to the checkpoint's step, and TensorBoard events, into the new run (its
    local directory or mirror) from the old run, a local directory or a URI."""
    old_run = open_location(info.path).parent
    new_run_dir.mkdir(parents=True, exist_ok=True)
    local = pafs.LocalFileSystem()
    metrics = old_run.child(layout.METRICS)
    if metrics.is_file():
        pafs.copy_files(metrics.path, str(new_run_dir / layout.METRICS), old_run.fs, local)
        copy_until(new_run_dir / layout.METRICS, new_run_dir / layout.METRICS, info.step)
    tensorboard = old_run.child(layout.TENSORBOARD)
    if tensorboard.is_dir():
        (new_run_dir / layout.TENSORBOARD).mkdir()
        pafs.copy_files(tensorboard.path, str(new_run_dir / layout.TENSORBOARD), old_run.fs, local)
