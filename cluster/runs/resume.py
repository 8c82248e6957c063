"""resume=latest|PATH: pick the checkpoint to continue from, before any worker starts.

A resume continues in a new run directory (the old run is never written to): the metrics
history up to the checkpoint and the TensorBoard events are carried over, so the loss
curve continues, and Ray Train hands the chosen checkpoint to the workers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from console import log
from rundir import layout
from rundir.checkpoints import CheckpointError, CheckpointInfo, latest_complete, verify_checkpoint
from rundir.metrics_file import copy_until
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig


def _newest_first(experiment_dir: Path) -> list[Path]:
    runs = [p for p in experiment_dir.iterdir() if p.is_dir()] if experiment_dir.is_dir() else []
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)


def choose_checkpoint(cfg: TrainJobConfig) -> CheckpointInfo:
    """resume=latest: the newest complete checkpoint of the experiment, saying what was
    skipped; resume=PATH: that checkpoint (which must verify) or that run's newest."""
    target = cfg.resume
    if target == "latest":
        experiment_dir = Path(cfg.output_dir) / cfg.experiment
        for run_dir in _newest_first(experiment_dir):
            info, skipped = latest_complete(run_dir)
            for reason in skipped:
                log.info(f"resume=latest: skipping {reason}; trying an older one")
            if info:
                return info
        raise ConfigError(
            f"resume=latest: no complete checkpoint under {experiment_dir}; "
            "allowed: an experiment with a checkpointed run, or resume=PATH"
        )
    path = Path(target).expanduser().resolve()
    if list(path.glob("manifest-rank*.json")):
        try:
            return verify_checkpoint(path)
        except CheckpointError as e:
            raise ConfigError(f"resume={target}: {e}") from None
    info, skipped = latest_complete(path)
    if info is None:
        why = f" ({skipped[0]})" if skipped else ""
        raise ConfigError(
            f"resume={target}: no complete checkpoint there{why}; allowed: "
            "latest, a run directory or a step_* checkpoint directory"
        )
    for reason in skipped:
        log.info(f"resume: skipping {reason}; using {info.path.name}")
    return info


def carry_history(info: CheckpointInfo, new_run_dir: Path) -> None:
    """Metrics up to the checkpoint's step, and TensorBoard events, into the new run."""
    old_run_dir = info.path.parent
    new_run_dir.mkdir(parents=True, exist_ok=True)
    metrics = old_run_dir / layout.METRICS
    if metrics.exists():
        copy_until(metrics, new_run_dir / layout.METRICS, info.step)
    if (old_run_dir / layout.TENSORBOARD).is_dir():
        shutil.copytree(old_run_dir / layout.TENSORBOARD, new_run_dir / layout.TENSORBOARD)
