"""train_loop_per_worker: runs in every Ray Train worker (the per-step code is in step.py)."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from transformers import AutoTokenizer

from schemas.jobs import TrainJobConfig
from schemas.training import RunPaths, grad_accum_for
from trainer.checkpoint import save_and_report
from trainer.ds_config import global_batch_size
from trainer.export import export_hf
from trainer.loader import batches_forever, build_dataloader, build_train_loader, load_split
from trainer.lora import trainable_fraction
from trainer.metrics import MetricsWriter, Throughput, plot_loss
from trainer.objectives.select import build_objective
from trainer.outputs import upload_run_dir
from trainer.restore import restore, start_point


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained on, all ranks
    samples: int = 0  # sequences of the global order consumed, all ranks (loader.py)


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


def build_worker_engine(cfg: TrainJobConfig, tokenizer, world: int, device, start):
    from trainer.engine import build_engine  # DeepSpeed loads in workers, never the driver

    universal = start is not None and start.universal
    engine, ds_config = build_engine(cfg, tokenizer, world, device.type == "cuda", universal)
    assert engine.train_batch_size() == global_batch_size(cfg.trainer, world)
    return engine, ds_config


def train_loop_per_worker(loop_config: dict) -> None:
    cfg: TrainJobConfig = loop_config["cfg"]
    paths: RunPaths = loop_config["paths"]
    # Ray Train V2 logs an INFO line per report per rank ("Reporting training result ...")
    # through a logger named by its file path, outside "ray.train", so LoggingConfig does
    # not reach it; it propagates to the worker's root logger. Our own lines do not use it.
    logging.getLogger().setLevel(logging.WARNING)
    timeline = {"worker_start": time.time()}
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    node = ray.get_runtime_context().get_node_id()
    say(f"[zeroray] rank {rank}/{world} on node {node[:12]} ({device})")
    seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    trainer_cfg = cfg.trainer
    end_step = min(trainer_cfg.max_steps, trainer_cfg.stop_at_step or trainer_cfg.max_steps)

    # An elastic group of another size keeps the global batch by accumulating more or less.
    trainer_cfg.grad_accum_steps = grad_accum_for(cfg.scaling, trainer_cfg, world)
    # Data preparation saved it with its EOS and pad tokens set (dataprep/tokenizer.py).
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer_dir)
    with start_point(paths.resume_from, world, ctx.get_local_rank()) as start:
        if start and start.universal:
            say(
                f"[zeroray] rank {rank}: resharding step {start.info.step} of "
                f"{start.info.world_size} workers for {world}"
            )
        engine, ds_config = build_worker_engine(cfg, tokenizer, world, device, start)
        timeline["engine_ready"] = time.time()
        train_loader, val_loader = build_loaders(cfg, paths, rank, world)
        objective = build_objective(cfg, engine, paths, rank, world, device, say)
        # Weights, optimizer, LR schedule, RNGs, and the data position as a global sample
        # count (checkpoints are taken at optimizer-step boundaries: no accumulation is half
        # done). The objective is built first: DPO scores its reference before any load.
        restored = restore(engine, rank, start)
    if rank == 0 and cfg.lora.enabled:
        say(lora_line(engine.module))
    state = TrainState(**(restored or {}))
    if restored and "samples" not in restored:  # written before the count was kept
        state.samples = state.step * engine.train_batch_size()
    batches = batches_forever(train_loader, state.samples)
    writer = MetricsWriter(paths.run_dir, resume_step=state.step) if rank == 0 else None
    speed = Throughput(engine, cfg, world, device)
    speed.tokens_per_step *= objective.sequences_per_row
    if rank == 0:
        say(speed.banner(ds_config, resumed_from=state.step))

    if state.step == 0 and trainer_cfg.eval_at_start:
        _log(writer, 0, objective.evaluate(engine, val_loader, trainer_cfg.eval_batches, device))
    engine.train()
    group_start = state.step  # where this group took over: resizes and restarts show
    while state.step < end_step:
        loss = objective.step(engine, batches, trainer_cfg.grad_accum_steps, device)
        state.step += 1
        state.tokens += speed.tokens_per_step
        state.samples += engine.train_batch_size()
        if "first_step" not in timeline and rank == 0:
            timeline["first_step"] = time.time()
            startup = Path(paths.run_dir) / "startup.json"
            if not startup.exists():  # the run's first start, not a restart's
                startup.write_text(json.dumps(timeline))
        speed.step(loss)
        metrics = speed.window() if _due(state.step, trainer_cfg.log_every_steps, end_step) else {}
        if metrics:
            metrics["tokens"] = state.tokens
            metrics["workers"] = world  # an elastic run's group size, step by step
            if group_start is not None:  # the first row of this (re)started group
                metrics["started_at_step"], group_start = group_start, None
            metrics.update(objective.window())
        if _due(state.step, trainer_cfg.eval_every_steps, end_step):
            metrics.update(objective.evaluate(engine, val_loader, trainer_cfg.eval_batches, device))
        if metrics:
            _log(writer, state.step, metrics)
            if rank == 0:
                say(progress_line(state.step, trainer_cfg.max_steps, metrics, speed.elapsed_s()))
        # Ray hears of checkpoints only. Every report waits until Ray Train's controller has
        # drained its one-result queue, which it polls every 2 s: reporting each log window
        # capped this loop at 10 windows per 2 s whatever the hardware (issue #18). Metrics
        # reach metrics.jsonl, TensorBoard and the console from rank 0 directly.
        if _due(state.step, trainer_cfg.checkpoint_every_steps, end_step):
            save_and_report(
                engine, asdict(state), {"step": state.step, **metrics}, state.step, rank, world
            )

    if state.step == trainer_cfg.max_steps:  # a run stopped early (stop_at_step) exports later
        merge = cfg.lora.merge_on_export
        export_hf(engine, tokenizer, paths.export_dir, cfg.deepspeed.stage, rank, merge)
    if writer:
        writer.close()
        plot_loss(writer.path, f"{paths.run_dir}/loss.png")
    if paths.upload_uri and rank == 0:  # output_dir is a URI: rank 0's files join the run
        upload_run_dir(paths.run_dir, paths.upload_uri)


def _due(step: int, every: int, end_step: int) -> bool:
    return step % every == 0 or step == end_step


def _log(writer, step: int, metrics: dict) -> None:
    if writer:
        writer.write(step, metrics)


def say(line: str) -> None:
    # To the process's real stdout: Ray Train patches print() in its workers to log through
    # a handler that also echoes, which showed every progress line twice in the driver.
    print(line, file=sys.__stdout__, flush=True)


def lora_line(model) -> str:
    trainable, total = trainable_fraction(model)
    return f"[zeroray] LoRA: {trainable:,} of {total:,} parameters train ({trainable / total:.2%})"


def progress_line(step: int, max_steps: int, metrics: dict, elapsed_s: float) -> str:
    eta = elapsed_s / step * (max_steps - step)
    parts = [f"step {step}/{max_steps}"]
    if "loss" in metrics:
        parts += [
            f"loss {metrics['loss']:.3f}",
            f"lr {metrics['lr']:.2e}",
            f"{metrics['tokens_per_s']:,.0f} tok/s",
            f"MFU {metrics['mfu']:.1%}",
        ]
    if "reward_accuracy" in metrics:
        parts.append(f"reward acc {metrics['reward_accuracy']:.2f}")
    if "val_ppl" in metrics:
        parts.append(f"val {metrics['val_loss']:.3f} (ppl {metrics['val_ppl']:.1f})")
    elif "val_reward_accuracy" in metrics:
        parts.append(
            f"val {metrics['val_loss']:.3f} (reward acc {metrics['val_reward_accuracy']:.2f}, "
            f"margin {metrics['val_reward_margin']:.3f})"
        )
    parts.append(f"eta {eta:.0f}s")
    return "[zeroray] " + " | ".join(parts)
