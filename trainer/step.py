"""train_step: one optimizer step, and evaluate_loss: the validation loss with the same token
weighting. No Ray here, so the same code runs under Ray Train, in a single process
(bench/gpu.py, evaluation), or under torchrun."""

from __future__ import annotations

import torch
import torch.distributed as dist

from trainer.metrics import perplexity


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


def target_tokens(batch: dict) -> int:
    """Tokens that carry a loss: each position's next token, unless its label is -100
    (prompt tokens in fine-tuning). transformers shifts the labels the same way."""
    labels = batch.get("labels", batch["input_ids"])
    return int((labels[..., 1:] != -100).sum())


def global_target_tokens(micro_batches: list[dict], device: torch.device) -> torch.Tensor:
    """Target tokens of the whole global batch: every micro-batch of every rank."""
    count = torch.tensor(float(sum(map(target_tokens, micro_batches))), device=device)
    if dist.is_initialized():
        dist.all_reduce(count)
    return count


def train_step(engine, batches, grad_accum_steps: int, device: torch.device) -> torch.Tensor:
    """One optimizer step over ``grad_accum_steps`` micro-batches (dicts of tensors).

    The loss is the sum of per-token losses over the number of target tokens in the whole
    global batch, so every target token weighs the same however the batch is split into
    ranks and accumulation steps (with ragged fine-tuning masks a per-micro-batch mean would
    weigh a token of a short micro-batch more). DeepSpeed divides each backward by the
    accumulation steps and averages gradients over ranks: each micro-batch's loss is its
    token-loss sum over (global tokens / (ranks x accumulation steps)) to undo both.

    Returns the mean of the micro-batch losses on this rank, as a tensor (no .item():
    reading it back would force a device sync every step): world x this rank's share of the
    global token-loss sum, so that the mean over ranks (metrics.Throughput.window) is the
    global batch's mean token loss."""
    micro_batches = [next(batches) for _ in range(grad_accum_steps)]
    world = dist.get_world_size() if dist.is_initialized() else 1
    per_share = global_target_tokens(micro_batches, device) / (world * grad_accum_steps)
    total = torch.zeros((), device=device)
    for batch in micro_batches:
        loss = engine(**model_inputs(batch, device), num_items_in_batch=per_share).loss
        engine.backward(loss)
        engine.step()  # DeepSpeed only steps the optimizer at the accumulation boundary
        total += loss.detach()
    return total / grad_accum_steps


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
