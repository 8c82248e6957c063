"""train_loop_per_worker: runs in every Ray Train worker. It reads only the RunSpec the
driver resolved (schemas/run_spec.py); the per-step code is in step.py and the objectives,
the timing of logging, evaluation and checkpoints in run_components.py."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from transformers import AutoTokenizer

from console import log
from rundir.node_cache import local_prepared
from rundir.run_copy import fetch_history, push_history, working_copy
from schemas.jobs import TrainJobConfig
from schemas.run_spec import RunPaths, RunSpec
from trainer.export import export_hf, upload_run_dir
from trainer.loader import batches_forever, build_dataloader, build_train_loader, load_split
from trainer.lora import trainable_fraction
from trainer.metrics import MetricsWriter, Throughput, plot_loss
from trainer.objectives.select import build_objective
from trainer.restore import restore, start_point
from trainer.run_components import (
    Checkpointer,
    Evaluator,
    FinishRequest,
    Reporter,
    StartupClock,
    TrainState,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_loaders(cfg: TrainJobConfig, paths: RunPaths, rank: int, world: int):
    trainer_cfg = cfg.trainer
    train = load_split(paths.dataset_dir, "train")
    val = load_split(paths.dataset_dir, "validation")
    train_loader = build_train_loader(
        train,
        trainer_cfg.micro_batch_size,
        trainer_cfg.grad_accum_steps,
        rank,
        world,
        cfg.seed,
        trainer_cfg.num_dataloader_workers,
    )
    # A small validation split still gives every rank at least one (smaller) batch.
    val_batch = min(trainer_cfg.micro_batch_size, len(val) // world)
    return train_loader, build_dataloader(val, val_batch, rank, world, cfg.seed, False)


def on_this_node(spec: RunSpec) -> RunPaths:
    """Where this worker reads and writes: the prepared data in place, or this node's copy
    (prepared_dir in an object store); rank 0's run files in place, or in this node's
    working copy (output_dir a URI: rundir/run_copy.py)."""
    paths, keep = working_copy(spec.paths), spec.cfg.prepared_copies_gib
    return replace(
        paths,
        dataset_dir=local_prepared(paths.dataset_dir, keep),
        tokenizer_dir=local_prepared(paths.tokenizer_dir, keep),
    )


def for_group(spec: RunSpec, world: int) -> TrainJobConfig:
    """The run's config as a group of ``world`` workers runs it: an elastic group of another
    size keeps the global batch by accumulating more or fewer micro-batches (a copy; the
    spec is never written)."""
    accum = spec.batch.accum_for(world)
    return replace(spec.cfg, trainer=replace(spec.cfg.trainer, grad_accum_steps=accum))


def train_loop_per_worker(loop_config: dict) -> None:
    spec: RunSpec = loop_config["spec"]
    paths = on_this_node(spec)
    # Ray Train V2 logs an INFO line per report per rank ("Reporting training result ...")
    # through a logger named by its file path, outside "ray.train", so LoggingConfig does
    # not reach it; it propagates to the worker's root logger. Our own lines do not use it.
    logging.getLogger().setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    clock = StartupClock()
    # DeepSpeed loads with mlflow hidden (trainer/engine.py), so before the tracker's thread,
    # which imports mlflow, starts: hidden while that thread imports it, tracking would fail.
    from trainer.engine import build_engine  # DeepSpeed loads in workers, never the driver

    tracker = open_tracker(spec) if rank == 0 else None  # opens while the engine builds
    device = ray.train.torch.get_device()
    node = ray.get_runtime_context().get_node_id()
    log.info(f"rank {rank}/{world} on node {node[:12]} ({device})")
    cfg = for_group(spec, world)
    seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    trainer_cfg, end_step = cfg.trainer, spec.end_step

    # Data preparation saved it with its EOS and pad tokens set (dataprep/tokens/tokenizer.py).
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer_dir)
    with start_point(paths.resume_from, world, ctx.get_local_rank()) as start:
        if start and start.universal:
            log.info(
                f"rank {rank}: resharding step {start.info.step} of "
                f"{start.info.world_size} workers for {world}"
            )
        universal = start is not None and start.universal
        engine, ds_config = build_engine(cfg, tokenizer, world, device.type == "cuda", universal)
        assert engine.train_batch_size() == spec.batch.global_batch
        clock.mark("engine_ready")
        train_loader, val_loader = build_loaders(cfg, paths, rank, world)
        objective = build_objective(spec, paths.dataset_dir, engine, rank, world, device)
        # Weights, optimizer, LR schedule, RNGs, and the data position as a global sample
        # count (checkpoints are taken at optimizer-step boundaries: no accumulation is half
        # done). The objective is built first: DPO scores its reference before any load.
        restored = restore(engine, rank, start)
    if rank == 0 and cfg.lora.enabled:
        log.info(lora_line(engine.module))
    state = TrainState(**(restored or {}))
    if restored and "samples" not in restored:  # written before the count was kept
        state.samples = state.step * engine.train_batch_size()
    batches = batches_forever(train_loader, state.samples)
    if rank == 0:
        fetch_history(paths, state.step)  # rank 0 may have moved to another node
    writer = MetricsWriter(paths.run_dir, resume_step=state.step) if rank == 0 else None
    speed = Throughput(engine, cfg, spec.batch.global_batch, world, device)
    speed.tokens_per_step *= objective.sequences_per_row
    if rank == 0:
        log.info(speed.banner(ds_config, resumed_from=state.step))
    every = trainer_cfg
    reporter = Reporter(
        speed, objective, writer, every.log_every_steps, end_step, spec.max_steps, tracker
    )
    evaluator = Evaluator(
        objective, engine, val_loader, every.eval_batches, device, every.eval_every_steps, end_step
    )

    def persist_history() -> None:  # rank 0, before each checkpoint is reported
        if tracker:
            tracker.flush()
        push_history(paths, writer)

    checkpointer = Checkpointer(
        engine, every.checkpoint_every_steps, end_step, rank, world,
        before=persist_history if rank == 0 else None,
    )  # fmt: skip
    # Looked for in the run's home (its URI, or the path every node shares), not a copy.
    finish = FinishRequest(
        spec.paths.upload_uri or spec.paths.run_dir, every.log_every_steps, rank, device
    )

    if state.step == 0 and trainer_cfg.eval_at_start:
        reporter.write(0, evaluator.evaluate())
    engine.train()
    # Where this group took over (resizes and restarts show) and how long it took to start.
    reporter.start_group(state.step, clock)
    while state.step < end_step:
        loss = objective.step(engine, batches, trainer_cfg.grad_accum_steps, device)
        state.step += 1
        state.tokens += speed.tokens_per_step
        state.samples += engine.train_batch_size()
        clock.mark("first_step")
        speed.step(loss)
        if finish.when_due(state.step, end_step):
            end_step = finish.end_here(state.step, reporter, evaluator, checkpointer)
        metrics = reporter.window(state, world) | evaluator.when_due(state.step)
        reporter.log(state.step, metrics)
        checkpointer.when_due(state, metrics)

    # A run stopped at stop_at_step exports when a resume reaches max_steps; one asked to
    # finish exports now.
    if state.step == spec.max_steps or finish.granted:
        merge = cfg.lora.merge_on_export
        export_hf(engine, tokenizer, paths.export_dir, cfg.deepspeed.stage, rank, merge)
        finish.withdraw()
    if writer:
        writer.close()
        plot_loss(writer.path, f"{paths.run_dir}/loss.png")
    if tracker:
        tracker.close()  # everything queued is in the store before the driver ends the run
    if paths.upload_uri and rank == 0:  # output_dir is a URI: rank 0's files join the run
        upload_run_dir(paths.run_dir, paths.upload_uri)


def open_tracker(spec: RunSpec):
    """Rank 0's metrics logger for the job's tracking run; None with tracking off, and then
    MLflow is never imported."""
    if spec.tracking is None:
        return None
    from tracking.metrics_logger import open_metrics_logger

    return open_metrics_logger(spec.tracking)


def lora_line(model) -> str:
    trainable, total = trainable_fraction(model)
    return f"LoRA: {trainable:,} of {total:,} parameters train ({trainable / total:.2%})"
