"""Validation loss and perplexity: the mean loss of every target token of every rank's shard."""

from __future__ import annotations

import torch
import torch.distributed as dist

from trainer.metrics import perplexity
from trainer.step import model_inputs, target_tokens


@torch.no_grad()
def evaluate_loss(model, loader, max_batches: int, device: torch.device) -> dict:
    """``model``: a DeepSpeed engine or a plain transformers model."""
    was_training = model.training
    model.eval()
    # Sum of token losses and the token count, reduced once at the end: batches with more
    # target tokens weigh more (fine-tuning masks make them ragged), as in training.
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        tokens = target_tokens(batch)
        totals[0] += model(**model_inputs(batch, device)).loss.double() * tokens
        totals[1] += tokens
    if dist.is_initialized():
        dist.all_reduce(totals)
    if was_training:
        model.train()
    loss = (totals[0] / totals[1].clamp(min=1)).item()
    return {"val_loss": loss, "val_ppl": perplexity(loss)}
