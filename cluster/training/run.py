"""The run every training job is: config -> checks -> resume choice -> Ray -> data (the
recipe's) -> the run resolved once -> TorchTrainer -> summary (and, for jobs that start from
a model, that model and the result evaluated side by side).

torchtitan's train.py has the same shape: parse, build, train. The entry points
(cluster/train.py, finetune.py, dpo.py) are one line each over ``run_job``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.cli import load_or_show
from cluster.ray_setup import check_resources, init_ray
from cluster.runs.resolve import absolute_paths, batch_for, resolve_run
from cluster.runs.resume import carry_history, choose_checkpoint
from cluster.runs.run_dir import (
    check_writable,
    new_run_dir,
    release_unused,
    save_resolved_config,
)
from cluster.runs.storage import (
    experiment_storage,
    is_uri,
    pull_run_outputs,
    push_carried_history,
    push_driver_outputs,
    run_uri,
)
from cluster.schema import SCHEMAS, compose_config, to_typed
from cluster.training.export_eval import evaluate_exports, save_predictions
from cluster.training.recipes import Recipe
from cluster.training.summary import build_summary, startup_breakdown, write_and_print
from cluster.training.tracking import JobTracking, check_tracking, open_tracking
from console import log
from dataprep.cache import PreparedData
from dataprep.readers.documents import input_fingerprint
from evaluation.report import format_reports
from planner.report import refuse_if_it_does_not_fit
from rundir import layout
from rundir.node_cache import local_copy
from rundir.store import absolute
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig
from schemas.run_spec import RunSpec

CONTROLLER_POLL_S = 0.25  # measured in bench.train_bench's headline (BENCHMARKS.md)


def load_job_config(recipe: Recipe, overrides: list[str]) -> TrainJobConfig:
    """Compose conf/<job>.yaml; a job that starts from a model and names none takes the
    newest export of its base experiment (before validation, which requires one)."""
    composed = compose_config(recipe.job, overrides)
    if recipe.base_experiment and composed.model.name_or_path is None:
        root = absolute(composed.output_dir)  # a path or a URI
        runs = f"{root}/{recipe.base_experiment}"
        base = layout.newest_export(root, recipe.base_experiment)
        if base is None:
            raise ConfigError(
                f"model.name_or_path=null and there is no {recipe.base_experiment} export under "
                f"{runs}; allowed: run `{recipe.base_command}` first, or name an export "
                "directory or hub id"
            )
        composed.model.name_or_path = str(base)  # composition, before validation
    return to_typed(composed, SCHEMAS[recipe.job])


def check_context(cfg: TrainJobConfig) -> None:
    """The base model's context bounds seq_len (a built model's is checked in the schema)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(local_copy(cfg.model.name_or_path))
    context = getattr(config, "max_position_embeddings", None) or config.n_positions
    if cfg.trainer.seq_len > context:
        raise ConfigError(
            f"trainer.seq_len={cfg.trainer.seq_len} is not allowed: must be <= the base "
            f"model's context of {context} tokens"
        )


def preflight(cfg: TrainJobConfig) -> tuple[str, Path, str | None]:
    """Every check that needs no cluster, so bad input fails before anything starts:
    (run name, run directory, the tracking store or None)."""
    refuse_if_it_does_not_fit(cfg)  # an out-of-memory error is costliest once workers run
    check_writable(cfg.output_dir, "output_dir")
    check_writable(cfg.cache_dir, "cache_dir")
    if cfg.prepared_dir != cfg.cache_dir:
        check_writable(cfg.prepared_dir, "prepared_dir")
    input_fingerprint(cfg.data)  # raises if data.paths match nothing
    tracking_uri = check_tracking(cfg)  # an unreachable tracking server, named in one line
    return *new_run_dir(cfg), tracking_uri


def build_trainer(spec: RunSpec, run_name: str):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainer.loop import train_loop_per_worker

    cfg, scaling = spec.cfg, spec.cfg.scaling
    # Ray Train's controller notices that the workers finished at its next poll of the
    # worker group (every 2 s by default): up to 2 s of idle tail per run. It does not
    # shorten the worker start (8.3 s for a no-op TorchTrainer here, at 2 s or 0.25 s).
    # Ray passes this setting from the driver to the controller (ENV_VARS_TO_PROPAGATE).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(CONTROLLER_POLL_S))
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(scaling.worker_start_timeout_s)
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = 1
    # A (min, max) tuple makes Ray Train elastic: it starts with as many workers as the
    # cluster holds and resizes the group (a restart from the newest checkpoint) as nodes
    # leave or join; the workers reshard that checkpoint themselves (trainer/restore.py).
    workers = scaling.worker_range() if scaling.elastic else scaling.max_workers
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
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
    spec: RunSpec
    prepared: PreparedData
    wall_s: float
    startup_s: dict
    tracking: JobTracking

    @property
    def run_dir(self) -> Path:
        return Path(self.spec.paths.run_dir)


def run_training(cfg: TrainJobConfig, recipe: Recipe) -> TrainingRun:
    """Checks, resume choice, Ray, the recipe's data, the run resolved, the TorchTrainer run,
    and its outputs pulled to the driver."""
    started, timeline = time.perf_counter(), {"start": time.time()}
    cfg = absolute_paths(cfg)
    run_name, run_dir, tracking_uri = preflight(cfg)
    upload = run_uri(cfg.output_dir, cfg.experiment, run_name) if is_uri(cfg.output_dir) else None
    tracking = JobTracking()
    try:
        resume = choose_checkpoint(cfg) if cfg.resume else None
        if resume:
            log.info(f"resuming from {resume.path} (step {resume.step}) into {run_dir}")
        batch = batch_for(cfg, resume)  # a worker count that cannot keep it: refused here
        check_resources(cfg.scaling, init_ray())
        timeline["ray_ready"] = time.time()
        prepared = recipe.prepare(cfg)
        timeline["data_ready"] = time.time()
        # The job's one tracking run, created here (or continued: resume=latest); rank 0
        # learns its id from the spec.
        tracking = open_tracking(cfg, tracking_uri, run_dir, resume)
        spec = resolve_run(
            cfg,
            objective=recipe.objective,
            run_dir=run_dir,
            prepared=prepared,
            resume=resume,
            batch=batch,
            upload_uri=upload,
            tracking=tracking.target,
        )
        save_resolved_config(spec.cfg, run_dir)
        tracking.record_start(spec, prepared, run_dir)
        if resume:
            carry_history(resume, run_dir)
            push_carried_history(cfg.output_dir, cfg.experiment, run_dir)
        build_trainer(spec, run_name).fit()
        pull_run_outputs(cfg.output_dir, cfg.experiment, run_dir)  # URI: rank 0 may be elsewhere
    except BaseException as e:
        tracking.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        # A run that failed before its first file leaves no name taken.
        release_unused(run_dir, upload)
    startup = startup_breakdown(timeline, run_dir, resume.step if resume else 0)
    return TrainingRun(spec, prepared, time.perf_counter() - started, startup, tracking)


def finish(recipe: Recipe, run: TrainingRun) -> None:
    """Summary; for a job that started from a model, it and the result side by side."""
    cfg = run.spec.cfg
    stats, hit = run.prepared.stats, run.prepared.cache_hit
    summary = build_summary(
        run.run_dir, stats, hit, run.wall_s, cfg.num_samples, run.spec.max_steps
    )
    summary["startup_s"] = run.startup_s
    if run.tracking.target:
        summary["tracking"] = {"uri": run.tracking.uri, "run_id": run.tracking.target.run_id}
    export = run.run_dir / layout.EXPORT
    compare = recipe.compare_as and cfg.evaluate_at_end
    if compare and summary["exported"]:
        names = list(recipe.compare_as)
        # A URI run's export from the bucket: the task may run on a node without the
        # driver's copy.
        upload = run.spec.paths.upload_uri
        result = f"{upload}/{layout.EXPORT}" if upload else str(export)
        reports = evaluate_exports(
            [cfg.model.name_or_path, result], cfg.data, cfg.sft, cfg.eval, cfg.prepared_dir
        )
        save_predictions(reports, names, run.run_dir / layout.PREDICTIONS)
        print(f"\n=== evaluation: {names[0]} vs {names[1]} ===")
        print(format_reports(reports, names))
        (run.run_dir / layout.EVAL).write_text(json.dumps(dict(zip(names, reports)), indent=2))
        summary["eval_json"] = str(run.run_dir / layout.EVAL)
    adapter = export / "adapter" if layout.is_adapter(export / "adapter") else export
    if summary["exported"] and layout.is_adapter(adapter):  # a LoRA run: its adapter alone
        summary["serve_adapter"] = (
            f'make serve ARGS="checkpoint={cfg.model.name_or_path} '
            f'+serve.lora.adapters.{run.run_dir.name}={adapter}"'
        )
    write_and_print(summary, run.run_dir)
    push_driver_outputs(cfg.output_dir, cfg.experiment, run.run_dir)
    run.tracking.record_end(cfg, run.run_dir)


def run_job(recipe: Recipe, argv: list[str]) -> int:
    cfg = load_or_show(
        f"cluster.{recipe.job}", recipe.job, argv, load=lambda o: load_job_config(recipe, o)
    )
    if cfg is None:
        return 0
    if recipe.base_experiment:
        check_context(cfg)
    run = run_training(cfg, recipe)
    try:
        finish(recipe, run)
    except BaseException:
        run.tracking.end("FAILED")
        raise
    return 0
