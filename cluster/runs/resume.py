"""resume=latest|PATH: pick the checkpoint to continue from, before any worker starts.

A resume continues in a new run directory (the old run is never written to): the metrics
history up to the checkpoint and the TensorBoard events are carried over, so the loss
curve continues, and Ray Train hands the chosen checkpoint to the workers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig
from trainer.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    latest_complete,
    verify_checkpoint,
)
from trainer.metrics import read_metrics


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
                print(f"[zeroray] resume=latest: skipping {reason}; trying an older one")
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
        print(f"[zeroray] resume: skipping {reason}; using {info.path.name}")
    return info


def keep_global_batch(info: CheckpointInfo, cfg: TrainJobConfig) -> None:
    """A checkpoint of another number of workers is resharded by the workers as they load
    it (trainer/restore.py); here the global batch is kept by setting grad_accum_steps (a
    different global batch would change every step after it). A worker count that cannot
    keep it is refused, naming the counts that can."""
    scaling, micro = cfg.scaling, cfg.trainer.micro_batch_size
    if not scaling.elastic and info.world_size == scaling.num_workers:
        return
    batch = info.global_batch
    if batch is None:
        raise ConfigError(
            f"scaling.num_workers={scaling.num_workers} but checkpoint {info.path} was "
            f"written by {info.world_size} workers, before zeroray recorded global batches; "
            f"allowed: scaling.num_workers={info.world_size}"
        )
    bad = [w for w in scaling.worker_counts() if batch % (micro * w)]
    if bad:
        fits = [str(w) for w in range(1, batch // micro + 1) if batch % (micro * w) == 0]
        raise ConfigError(
            f"scaling.num_workers={scaling.num_workers}: checkpoint {info.path} was written "
            f"by {info.world_size} workers with a global batch of {batch} samples, which "
            f"{bad[0]} workers x micro_batch_size {micro} cannot divide; allowed: "
            f"{', '.join(fits)} (a count, or a [min, max] of only these), or another "
            "trainer.micro_batch_size"
        )
    cfg.trainer.grad_accum_steps = batch // (micro * scaling.max_workers)
    if info.world_size != scaling.max_workers or scaling.elastic:
        print(
            f"[zeroray] checkpoint {info.path.name} was written by {info.world_size} workers; "
            f"the workers reshard it as they load it (trainer.grad_accum_steps="
            f"{cfg.trainer.grad_accum_steps} at {scaling.max_workers} workers keeps its "
            f"global batch of {batch})",
            flush=True,
        )


def carry_history(info: CheckpointInfo, new_run_dir: Path) -> None:
    """Metrics up to the checkpoint's step, and TensorBoard events, into the new run."""
    old_run_dir = info.path.parent
    new_run_dir.mkdir(parents=True, exist_ok=True)
    metrics = old_run_dir / "metrics.jsonl"
    if metrics.exists():
        import json

        rows = [r for r in read_metrics(metrics) if r["step"] <= info.step]
        (new_run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if (old_run_dir / "tensorboard").is_dir():
        shutil.copytree(old_run_dir / "tensorboard", new_run_dir / "tensorboard")
