"""Direct Preference Optimization (Rafailov et al., 2023): the loss, one optimizer step, the
reward statistics, and the held-out evaluation. No Ray here, like step.py.

For a pair (x, chosen y+, rejected y-), with log-probabilities summed over each answer's
tokens only, the implicit rewards are r± = beta * (log pi(y±|x) - log ref(y±|x)) and the loss
is -log sigmoid(r+ - r-) (with label smoothing e: (1-e) of that plus e * -log sigmoid(r- - r+),
the conservative variant). The reference is either the policy with its LoRA adapter disabled
(no second copy of the weights) or a table of log-probabilities computed once by the starting
model (dpo_reference.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from schemas.training import DPOConfig

SIDES = ("chosen", "rejected")
IGNORE_INDEX = -100  # the label of prompt and padding tokens (dataprep/tokens/chat.py)
# (chosen log-probs, rejected log-probs) of a batch's pairs under the reference
Reference = Callable[[dict, str], tuple[torch.Tensor, torch.Tensor]]


def answer_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the sum of log p(token) over the labelled tokens (labels != -100), each
    predicted from the position before it: the answer's log-probability given its prompt."""
    targets = labels[:, 1:]
    token_nll = F.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(),
        targets,
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return -token_nll.sum(-1)


def pair_logps(model, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) answer log-probabilities, both sides in one forward pass. Rows are
    right-padded, so no position attends to padding and no attention mask is needed."""
    ids = torch.cat([batch[f"{s}_input_ids"] for s in SIDES]).to(device, non_blocking=True)
    labels = torch.cat([batch[f"{s}_labels"] for s in SIDES]).to(device, non_blocking=True)
    logps = answer_logps(model(input_ids=ids, use_cache=False).logits, labels)
    return logps.chunk(2)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen rewards, rejected rewards); rewards carry no gradient."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    margin = chosen_rewards - rejected_rewards
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


class RewardStats:
    """Sums of the rewards and of correctly ordered pairs, reduced over ranks on read."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        # loss, chosen reward, rejected reward, pairs ordered right, pairs
        self.sums = torch.zeros(5, dtype=torch.float64, device=self.device)

    def add(self, losses, chosen_rewards, rejected_rewards) -> None:
        self.sums += torch.stack(
            [
                losses.detach().double().sum(),
                chosen_rewards.double().sum(),
                rejected_rewards.double().sum(),
                (chosen_rewards > rejected_rewards).double().sum(),
                torch.tensor(float(len(losses)), dtype=torch.float64, device=self.device),
            ]
        )

    def read(self, prefix: str = "") -> dict:
        sums = self.sums.clone()
        if dist.is_initialized():
            dist.all_reduce(sums)
        loss, chosen, rejected, right, pairs = (sums / sums[4].clamp(min=1)).tolist()
        self.reset()
        out = {
            "rewards_chosen": chosen,
            "rewards_rejected": rejected,
            "reward_margin": chosen - rejected,
            "reward_accuracy": right,
        }
        if prefix:  # validation: its loss too (training's comes from Throughput)
            out["loss"] = loss
        return {f"{prefix}{k}": v for k, v in out.items()}


def dpo_step(
    engine,
    batches,
    grad_accum_steps: int,
    device: torch.device,
    reference: Reference,
    cfg: DPOConfig,
    stats: RewardStats,
) -> torch.Tensor:
    """One optimizer step over ``grad_accum_steps`` micro-batches of pairs. Every micro-batch
    holds the same number of pairs, so its mean loss, averaged by DeepSpeed over accumulation
    steps and ranks, is the global batch's mean. Returns this rank's mean loss (a tensor)."""
    total = torch.zeros((), device=device)
    for _ in range(grad_accum_steps):
        batch = next(batches)
        ref_chosen, ref_rejected = reference(batch, "train")
        chosen, rejected = pair_logps(engine, batch, device)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, cfg.beta, cfg.label_smoothing
        )
        loss = losses.mean()
        engine.backward(loss)
        engine.step()
        total += loss.detach()
        stats.add(losses, chosen_rewards, rejected_rewards)
    return total / grad_accum_steps


@torch.no_grad()
def evaluate_preferences(
    engine, loader, max_batches: int, device: torch.device, reference: Reference, cfg: DPOConfig
) -> dict:
    """val_loss, val_rewards_chosen/rejected, val_reward_margin and val_reward_accuracy over
    every rank's shard of the held-out pairs."""
    was_training = engine.training
    engine.eval()
    stats = RewardStats(device)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        ref_chosen, ref_rejected = reference(batch, "validation")
        chosen, rejected = pair_logps(engine, batch, device)
        stats.add(
            *dpo_loss(chosen, rejected, ref_chosen, ref_rejected, cfg.beta, cfg.label_smoothing)
        )
    if was_training:
        engine.train()
    return stats.read(prefix="val_")
