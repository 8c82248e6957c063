"""resume=latest|PATH: pick the checkpoint to continue from, before any worker starts.

A resume continues in a new run directory (the old run is never written to): the metrics
history up to the checkpoint and the TensorBoard events are carried over, so the loss
curve continues, and Ray Train hands the chosen checkpoint to the workers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig
from trainer.checkpoint import (
    TAG,
    UNIVERSAL_TAG,
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


def fit_world_size(info: CheckpointInfo, cfg: TrainJobConfig) -> bool:
    """Whether the checkpoint must be resharded for this run's number of workers. When it
    must, the global batch is kept by setting grad_accum_steps (a different global batch
    would change every step after it); a count that cannot keep it is refused."""
    world, micro = cfg.scaling.num_workers, cfg.trainer.micro_batch_size
    if info.world_size == world:
        return False
    batch = info.global_batch
    if batch is None:
        raise ConfigError(
            f"scaling.num_workers={world} but checkpoint {info.path} was written by "
            f"{info.world_size} workers, before zeroray recorded global batches; allowed: "
            f"scaling.num_workers={info.world_size}"
        )
    if batch % (micro * world):
        fits = [str(w) for w in range(1, batch // micro + 1) if batch % (micro * w) == 0]
        raise ConfigError(
            f"scaling.num_workers={world}: checkpoint {info.path} was written by "
            f"{info.world_size} workers with a global batch of {batch} samples, which "
            f"{world} workers x micro_batch_size {micro} cannot divide; allowed: "
            f"{', '.join(fits)} (or another trainer.micro_batch_size)"
        )
    cfg.trainer.grad_accum_steps = batch // (micro * world)
    return True


def to_universal(info: CheckpointInfo, run_dir: Path, world: int, accum: int) -> Path:
    """DeepSpeed's ds_to_universal, run once by the driver: the checkpoint as one file per
    parameter and optimizer moment, which engines of any number of workers reshard on load.
    Written into the new run (the old one is never touched), with the RNG states beside it."""
    target = run_dir / "resume-universal"
    print(
        f"[zeroray] checkpoint {info.path.name} was written by {info.world_size} workers: "
        f"converting it to DeepSpeed's universal format for {world} "
        f"(trainer.grad_accum_steps={accum} keeps the global batch of {info.global_batch})",
        flush=True,
    )
    command = [
        sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
        "--input_folder", str(info.path / TAG),
        "--output_folder", str(target / UNIVERSAL_TAG),
        "--num_extract_workers", "1", "--num_merge_workers", "1",
        "--inject_missing_state",  # checkpoints saved before they carried the version key
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckpointError(f"converting {info.path} to a universal checkpoint failed: {last}")
    for rng in info.path.glob("rng-rank*.pt"):
        shutil.copy2(rng, target / rng.name)
    return target


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
