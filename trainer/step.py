"""train_step: one optimizer step. No Ray here, so the same step runs under Ray Train, in a
single process (bench/gpu.py), or under torchrun."""

from __future__ import annotations

import torch


def model_inputs(batch: dict, device: torch.device) -> dict:
    """A batch of column tensors as forward() keyword arguments on ``device``.

    Pretraining rows carry only input_ids: every next token is a target. Fine-tuning rows
    also carry labels (-100 on prompt tokens) and position_ids, which restart at 0 for each
    packed example; with no attention_mask given, transformers turns those restarts into a
    block-diagonal causal mask, so packed examples never attend to each other."""
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    inputs.setdefault("labels", inputs["input_ids"])
    # A cache makes transformers skip the packed-sequence mask, and training never reuses it.
    inputs["use_cache"] = False
    return inputs


def train_step(engine, batches, grad_accum_steps: int, device: torch.device) -> torch.Tensor:
    """One optimizer step over ``grad_accum_steps`` micro-batches (dicts of tensors); the mean
    loss as a tensor (no .item(): reading it back would force a device sync every step)."""
    total = torch.zeros((), device=device)
    for _ in range(grad_accum_steps):
        loss = engine(**model_inputs(next(batches), device)).loss
        engine.backward(loss)
        engine.step()  # DeepSpeed only steps the optimizer at the accumulation boundary
        total += loss.detach()
    return total / grad_accum_steps
