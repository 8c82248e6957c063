"""Resolve once: the validated config, the checkpoint to resume and the prepared data become
one frozen RunSpec (schemas/run_spec.py), validated after deriving. Nothing writes to a config
after this; the workers read the spec.

Two steps, because the data is prepared on the cluster: ``absolute_paths`` before anything
starts (every check that needs no cluster runs on its result), ``resolve_run`` once the data
is ready (``max_steps`` from epochs needs its row count).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cluster.runs import storage
from console import log
from dataprep.cache import PreparedData
from rundir import layout
from rundir.checkpoints import CheckpointInfo
from schemas.batch import BatchPlan
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig, check_stop_at_step
from schemas.run_spec import RunPaths, RunSpec, TrackingTarget


def _absolute(path: str | None) -> str | None:
    """A local path made absolute; a hub id (nothing there) is left as it is."""
    if path and Path(path).expanduser().exists():
        return str(Path(path).expanduser().resolve())
    return path


def absolute_paths(cfg: TrainJobConfig) -> TrainJobConfig:
    """A copy of ``cfg`` with every path absolute: workers run in their own directories."""
    if storage.is_uri(cfg.output_dir):
        storage.check_uri(cfg.output_dir, "output_dir")  # a URI is already absolute
        output_dir = cfg.output_dir
    else:
        output_dir = str(Path(cfg.output_dir).expanduser().resolve())
    if storage.is_uri(cfg.cache_dir):
        # The driver's and each node's own files: mirrors, fetched copies, datasets' cache.
        raise ConfigError(
            f"cache_dir={cfg.cache_dir!r} is not allowed: a local path (a URI goes in "
            "prepared_dir, for prepared data, or output_dir, for runs)"
        )
    cache_dir = str(Path(cfg.cache_dir).expanduser().resolve())
    prepared_dir = cfg.prepared_dir or cache_dir
    if storage.is_uri(prepared_dir):
        storage.check_uri(prepared_dir, "prepared_dir")
    else:
        prepared_dir = str(Path(prepared_dir).expanduser().resolve())
    resume = cfg.resume
    if resume and storage.is_uri(resume):
        storage.check_uri(resume, "resume")
    elif resume and resume != "latest":
        resume = str(Path(resume).expanduser().resolve())
    data = replace(
        cfg.data,
        # Local globs made absolute (workers run in other directories); URIs as given.
        paths=[
            p if storage.is_uri(p) else str(Path(p).expanduser().absolute()) for p in cfg.data.paths
        ],
        hf_name=_absolute(cfg.data.hf_name),
    )
    return replace(
        cfg,
        output_dir=output_dir,
        cache_dir=cache_dir,
        prepared_dir=prepared_dir,
        resume=resume,
        data=data,
        model=replace(cfg.model, name_or_path=_absolute(cfg.model.name_or_path)),
        tokenizer=replace(cfg.tokenizer, name_or_path=_absolute(cfg.tokenizer.name_or_path)),
    )


def batch_for(cfg: TrainJobConfig, resume: CheckpointInfo | None) -> BatchPlan:
    """The run's batch plan: the config's, or the one that keeps the resumed checkpoint's
    global batch. Needs no cluster, so a worker count that cannot keep it is refused before
    anything starts."""
    batch = BatchPlan.of(cfg.trainer, cfg.scaling)
    if resume is None:
        return batch
    kept = batch.keeping(resume.global_batch, str(resume.path), resume.world_size)
    if kept is not batch:
        log.info(
            f"checkpoint {resume.name} was written by {resume.world_size} "
            f"workers; the workers reshard it as they load it (trainer.grad_accum_steps="
            f"{kept.grad_accum_steps} at {kept.max_workers} workers keeps its global batch "
            f"of {resume.global_batch})"
        )
    return kept


def resolve_run(
    cfg: TrainJobConfig,
    *,
    objective: str,
    run_dir: Path,
    prepared: PreparedData,
    resume: CheckpointInfo | None = None,
    batch: BatchPlan | None = None,
    upload_uri: str | None = None,
    tracking: TrackingTarget | None = None,
) -> RunSpec:
    """The run as its workers will run it, from the validated config, the prepared data and
    the checkpoint it continues (if any); ``batch``: ``batch_for(cfg, resume)``, when the
    caller checked it already."""
    batch = batch or batch_for(cfg, resume)
    max_steps = cfg.trainer.max_steps
    if cfg.derives_max_steps():
        # Fine-tuning data counts its training rows (pairs for DPO): an epoch passes over them.
        max_steps = batch.steps_for_epochs(cfg.epochs, prepared.stats["train"]["rows"])
        log.info(f"{cfg.epochs} epochs = {max_steps} steps of {batch.global_batch} rows")
    check_stop_at_step(cfg.trainer.stop_at_step, max_steps)
    batch.check_split_sizes(prepared.stats["sequences"], cfg.trainer.seq_len)
    trainer = replace(cfg.trainer, max_steps=max_steps, grad_accum_steps=batch.grad_accum_steps)
    paths = RunPaths(
        run_dir=str(run_dir),
        dataset_dir=prepared.dataset_dir,
        tokenizer_dir=prepared.tokenizer_dir,
        export_dir=str(run_dir / layout.EXPORT),
        resume_from=str(resume.path) if resume else None,
        upload_uri=upload_uri,
    )
    return RunSpec(replace(cfg, trainer=trainer), paths, batch, objective, tracking)
