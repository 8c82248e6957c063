"""Pretraining entry point: compose config -> checks -> prepare data -> TorchTrainer -> summary.

python -m cluster.train [--cfg] [group=option ...] [key=value ...]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.cli import load_or_show, run_cli
from cluster.plan import refuse_if_it_does_not_fit
from cluster.ray_setup import check_resources, init_ray
from cluster.runs.resume import carry_history, choose_checkpoint, keep_global_batch
from cluster.runs.run_dir import (
    check_writable,
    new_run_dir,
    release_unused,
    resolve_paths,
    save_resolved_config,
)
from cluster.runs.storage import (
    experiment_storage,
    is_uri,
    pull_run_outputs,
    push_driver_outputs,
    run_uri,
)
from cluster.summary import build_summary, startup_breakdown, write_and_print
from dataprep.cache import PreparedData
from dataprep.prepare import prepare_data
from dataprep.readers.documents import input_fingerprint
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig
from schemas.training import RunPaths

CONTROLLER_POLL_S = 0.25  # measured in bench.train_bench's headline (BENCHMARKS.md)


def preflight(cfg: TrainJobConfig) -> tuple[str, Path]:
    """Every check that needs no cluster, so bad input fails before anything starts."""
    resolve_paths(cfg)
    check_writable(cfg.output_dir, "output_dir")
    check_writable(cfg.cache_dir, "cache_dir")
    input_fingerprint(cfg.data)  # raises if data.paths match nothing
    return new_run_dir(cfg)


def check_split_sizes(stats: dict, cfg: TrainJobConfig) -> None:
    """One global batch of training sequences, and a validation batch for every rank, or
    collectives would hang."""
    world, micro = cfg.scaling.max_workers, cfg.trainer.micro_batch_size
    train_need = world * micro * cfg.trainer.grad_accum_steps
    for split, need in (("train", train_need), ("validation", world)):
        have = stats["sequences"][split]
        if have < need:
            raise ConfigError(
                f"trainer.seq_len={cfg.trainer.seq_len}: the {split} split packs into {have} "
                f"sequences, fewer than the {need} that {world} workers need; allowed: more "
                "data, a shorter seq_len or a smaller micro_batch_size"
            )


def build_trainer(cfg: TrainJobConfig, paths: RunPaths, run_name: str):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainer.loop import train_loop_per_worker

    # Ray Train's controller notices that the workers finished at its next poll of the
    # worker group (every 2 s by default): up to 2 s of idle tail per run. It does not
    # shorten the worker start (8.3 s for a no-op TorchTrainer here, at 2 s or 0.25 s).
    # Ray passes this setting from the driver to the controller (ENV_VARS_TO_PROPAGATE).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(CONTROLLER_POLL_S))
    scaling = cfg.scaling
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(scaling.worker_start_timeout_s)
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = 1
    # A (min, max) tuple makes Ray Train elastic: it starts with as many workers as the
    # cluster holds and resizes the group (a restart from the newest checkpoint) as nodes
    # leave or join; the workers reshard that checkpoint themselves (trainer/restore.py).
    workers = tuple(scaling.num_workers) if scaling.elastic else scaling.num_workers
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "paths": paths},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=resources,
            placement_strategy=scaling.placement_strategy,
            elastic_resize_monitor_interval_s=scaling.elastic_resize_monitor_interval_s,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=experiment_storage(cfg.output_dir, cfg.experiment),  # path or URI
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.trainer.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            # Ray Train's INFO lines (one per report per rank) would bury the progress lines.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


@dataclass
class TrainingRun:
    run_dir: Path
    prepared: PreparedData
    wall_s: float
    startup_s: dict


def run_training(
    cfg: TrainJobConfig, prepare: Callable[[TrainJobConfig], PreparedData]
) -> TrainingRun:
    """Checks, resume choice, Ray, data (``prepare``), the TorchTrainer run, and its outputs
    pulled to the driver. Shared by pretraining and fine-tuning, which differ in data."""
    started, timeline = time.perf_counter(), {"start": time.time()}
    refuse_if_it_does_not_fit(cfg)  # an out-of-memory error is costliest once workers run
    run_name, run_dir = preflight(cfg)
    try:
        return _train_in(cfg, prepare, run_name, run_dir, started, timeline)
    finally:
        release_unused(run_dir)  # a run that failed before its first file leaves no name taken


def _train_in(cfg, prepare, run_name: str, run_dir: Path, started: float, timeline: dict):
    resume = choose_checkpoint(cfg) if cfg.resume else None
    if resume:
        print(f"[zeroray] resuming from {resume.path} (step {resume.step}) into {run_dir}")
    if resume:
        keep_global_batch(resume, cfg)
    check_resources(cfg.scaling, init_ray())
    timeline["ray_ready"] = time.time()

    prepared = prepare(cfg)
    timeline["data_ready"] = time.time()
    check_split_sizes(prepared.stats, cfg)
    save_resolved_config(cfg, run_dir)
    resume_from = str(resume.path) if resume else None
    if resume:
        carry_history(resume, run_dir)
    paths = RunPaths(
        run_dir=str(run_dir),
        dataset_dir=prepared.dataset_dir,
        tokenizer_dir=prepared.tokenizer_dir,
        export_dir=str(run_dir / "export"),
        resume_from=resume_from,
        upload_uri=run_uri(cfg.output_dir, cfg.experiment, run_name)
        if is_uri(cfg.output_dir)
        else None,
    )
    build_trainer(cfg, paths, run_name).fit()
    pull_run_outputs(cfg.output_dir, cfg.experiment, run_dir)  # URI: rank 0 may be elsewhere
    return TrainingRun(
        run_dir, prepared, time.perf_counter() - started, startup_breakdown(timeline, run_dir)
    )


def prepare_pretraining(cfg: TrainJobConfig) -> PreparedData:
    prepared = prepare_data(
        cfg.data, cfg.tokenizer, cfg.trainer.seq_len, cfg.cache_dir, cfg.model.name_or_path
    )
    print(
        f"[zeroray] data: {'cache hit' if prepared.cache_hit else 'prepared'} "
        f"{Path(prepared.dataset_dir).parent}: {prepared.stats['tokens']} tokens, "
        f"cleaning {prepared.stats['cleaning']}",
        flush=True,
    )
    return prepared


def main(argv: list[str]) -> int:
    cfg = load_or_show("cluster.train", "train", argv)
    if cfg is None:
        return 0
    run = run_training(cfg, prepare_pretraining)
    summary = build_summary(
        run.run_dir, run.prepared.stats, run.prepared.cache_hit, run.wall_s, cfg.num_samples
    )
    summary["startup_s"] = run.startup_s
    write_and_print(summary, run.run_dir)
    push_driver_outputs(cfg.output_dir, cfg.experiment, run.run_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
