"""train_step: one optimizer step. No Ray here, so the same step runs under Ray Train, in a
single process (bench/gpu.py), or under torchrun."""

from __future__ import annotations

import torch


def train_step(engine, batches, grad_accum_steps: int, device: torch.device) -> torch.Tensor:
    """One optimizer step over ``grad_accum_steps`` micro-batches; the mean loss as a tensor
    (no .item(): reading it back would force a device sync every step)."""
    total = torch.zeros((), device=device)
    for _ in range(grad_accum_steps):
        input_ids = next(batches).to(device, non_blocking=True)
        loss = engine(input_ids=input_ids, labels=input_ids).loss
        engine.backward(loss)
        engine.step()  # DeepSpeed only steps the optimizer at the accumulation boundary
        total += loss.detach()
    return total / grad_accum_steps
