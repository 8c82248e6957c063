"""Validation loss and perplexity, averaged over every rank's shard."""

from __future__ import annotations

import torch
import torch.distributed as dist

from trainer.metrics import perplexity


@torch.no_grad()
def evaluate_loss(engine, loader, max_batches: int, device: torch.device) -> dict:
    was_training = engine.module.training
    engine.eval()
    # Sum of per-batch mean losses and the batch count, reduced once at the end.
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        input_ids = batch["input_ids"].to(device)
        totals[0] += engine(input_ids=input_ids, labels=input_ids).loss.double()
        totals[1] += 1
    if dist.is_initialized():
        dist.all_reduce(totals)
    if was_training:
        engine.train()
    loss = (totals[0] / totals[1].clamp(min=1)).item()
    return {"val_loss": loss, "val_ppl": perplexity(loss)}
