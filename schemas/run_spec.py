"""What a run's workers receive: the run described once, fully derived, by the driver
(cluster/runs/resolve.py), and never written to afterwards.

Everything derived lives here: absolute paths, ``max_steps`` (from ``epochs`` for fine-tuning),
the accumulation that keeps a resumed checkpoint's global batch, the checkpoint to resume
from and which objective the workers minimise. Workers run in their own working directories
and read nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.batch import BatchPlan

OBJECTIVES = ("next_token", "dpo")


@dataclass(frozen=True)
class RunPaths:
    """Absolute locations a worker needs; resolved in the driver (workers have other cwds)."""

    run_dir: str
    dataset_dir: str  # prepared, packed dataset (Parquet shards or a saved DatasetDict)
    tokenizer_dir: str
    export_dir: str
    resume_from: str | None = None  # checkpoint a resume=... starts from (before Ray has one)
    upload_uri: str | None = None  # output_dir is a URI: rank 0 uploads run_dir here at the end


@dataclass(frozen=True)
class TrackingTarget:
    """The job's MLflow run, created by the driver: rank 0 logs its metrics there."""

    uri: str  # the tracking store or server, as the driver resolved it
    run_id: str


@dataclass(frozen=True)
class RunSpec:
    # The job config (TrainJobConfig or a subclass) with the derived values in place:
    # trainer.max_steps and trainer.grad_accum_steps are the ones this run uses.
    cfg: Any
    paths: RunPaths
    batch: BatchPlan
    objective: str = "next_token"  # one of OBJECTIVES
    tracking: TrackingTarget | None = None  # None: tracking=none (or it could not start)

    @property
    def max_steps(self) -> int:
        return self.cfg.trainer.max_steps

    @property
    def end_step(self) -> int:
        """Where this invocation stops: max_steps, or stop_at_step (resume continues it)."""
        return min(self.max_steps, self.cfg.trainer.stop_at_step or self.max_steps)
