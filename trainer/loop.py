"""train_loop_per_worker (runs in every Ray Train worker) and train_step."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import ray.train
import ray.train.torch
import torch

from trainer.checkpoint import export_hf, restore_latest, save_and_report
from trainer.config import RunPaths, TrainConfig
from trainer.ds_config import global_batch_size
from trainer.engine import build_engine
from trainer.evaluate import evaluate_loss
from trainer.loader import batches_forever, build_dataloader, load_split
from trainer.metrics import MetricsWriter, flops_per_token, measure_matmul_flops, mfu, plot_loss
from trainer.model import count_parameters
from trainer.tokenizer import load_pretrained_tokenizer


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained on, all ranks


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_step(engine, batches, grad_accum_steps: int, device: torch.device) -> torch.Tensor:
    """One optimizer step over ``grad_accum_steps`` micro-batches; the mean loss as a tensor
    (no .item(): reading it back would force a device sync every step)."""
    total = torch.zeros((), device=device)
    for _ in range(grad_accum_steps):
        _, input_ids = next(batches)
        input_ids = input_ids.to(device, non_blocking=True)
        loss = engine(input_ids=input_ids, labels=input_ids).loss
        engine.backward(loss)
        engine.step()  # DeepSpeed only steps the optimizer at the accumulation boundary
        total += loss.detach()
    return total / grad_accum_steps


def train_loop_per_worker(loop_config: dict) -> None:
    cfg: TrainConfig = loop_config["cfg"]
    paths: RunPaths = loop_config["paths"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    loop = cfg.trainer

    tokenizer = load_pretrained_tokenizer(paths.tokenizer_dir)
    engine, ds_config = build_engine(cfg, tokenizer, world, device.type == "cuda")
    assert engine.train_batch_size() == global_batch_size(loop, world)
    train_loader = build_dataloader(
        load_split(paths.dataset_dir, "train"),
        loop.micro_batch_size,
        rank,
        world,
        cfg.seed,
        True,
        loop.num_dataloader_workers,
    )
    val_split = load_split(paths.dataset_dir, "validation")
    # A small validation split still gives every rank at least one (smaller) batch.
    val_loader = build_dataloader(
        val_split, min(loop.micro_batch_size, len(val_split) // world), rank, world, cfg.seed, False
    )
    batches = batches_forever(train_loader)

    state = TrainState(**(restore_latest(engine) or {}))
    writer = MetricsWriter(paths.run_dir) if rank == 0 else None
    num_params = count_parameters(engine.module)
    tok_flops = flops_per_token(
        num_params, cfg.model.num_layers, cfg.model.hidden_size, loop.seq_len
    )
    tokens_per_step = global_batch_size(loop, world) * loop.seq_len
    peak_flops = cfg.scaling.peak_flops_per_device or measure_matmul_flops(
        device, next(engine.module.parameters()).dtype
    )
    if rank == 0:
        print(
            f"[zeroray] {num_params:,} parameters, ZeRO-{cfg.deepspeed.stage}, {world} "
            f"workers, {tokens_per_step:,} tokens/step, precision "
            f"{'bf16' if ds_config['bf16']['enabled'] else 'fp32'}, MFU against "
            f"{peak_flops / 1e9:,.0f} GFLOP/s per device",
            flush=True,
        )

    def log(metrics: dict) -> None:
        if writer:
            writer.write(state.step, metrics)

    if state.step == 0:
        log(evaluate_loss(engine, val_loader, loop.eval_batches, device))
    started, window_start, window_steps, loss_sum = time.perf_counter(), time.perf_counter(), 0, 0.0
    engine.train()
    while state.step < loop.max_steps:
        loss = train_step(engine, batches, loop.grad_accum_steps, device)
        state.step += 1
        state.tokens += tokens_per_step
        window_steps += 1
        loss_sum = loss_sum + loss
        metrics: dict = {}
        if state.step % loop.log_every_steps == 0 or state.step == loop.max_steps:
            elapsed = time.perf_counter() - window_start
            tps = window_steps * tokens_per_step / elapsed
            metrics = {
                "loss": float(loss_sum) / window_steps,
                "lr": engine.get_lr()[0],
                "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                "tokens_per_s": tps,
                "tokens": state.tokens,
                "mfu": mfu(tps, tok_flops, peak_flops, world),
            }
            window_start, window_steps, loss_sum = time.perf_counter(), 0, 0.0
        if state.step % loop.eval_every_steps == 0 or state.step == loop.max_steps:
            metrics.update(evaluate_loss(engine, val_loader, loop.eval_batches, device))
        if metrics:
            log(metrics)
            if rank == 0:
                print(
                    progress_line(
                        state.step, loop.max_steps, metrics, time.perf_counter() - started
                    ),
                    flush=True,
                )
        if state.step % loop.checkpoint_every_steps == 0 or state.step == loop.max_steps:
            save_and_report(engine, asdict(state), {"step": state.step, **metrics}, state.step)
        elif metrics:
            ray.train.report({"step": state.step, **metrics})

    export_hf(engine, tokenizer, paths.export_dir, cfg.deepspeed.stage, rank)
    if writer:
        writer.close()
        plot_loss(writer.path, f"{paths.run_dir}/loss.png")


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
    if "val_loss" in metrics:
        parts.append(f"val {metrics['val_loss']:.3f} (ppl {metrics['val_ppl']:.1f})")
    parts.append(f"eta {eta:.0f}s")
    return "[zeroray] " + " | ".join(parts)
