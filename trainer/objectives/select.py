"""What a run minimises: the next-token loss (pretraining, SFT) or the DPO loss on preference
pairs. The loop asks its objective for a step, its window metrics and a validation pass."""

from __future__ import annotations

import torch

from schemas.precision import resolve_precision
from schemas.run_spec import RunSpec
from trainer.objectives.dpo import RewardStats, dpo_step, evaluate_preferences
from trainer.step import evaluate_loss, train_step


class TokenObjective:
    sequences_per_row = 1

    def step(self, engine, batches, accum: int, device) -> torch.Tensor:
        return train_step(engine, batches, accum, device)

    def window(self) -> dict:
        return {}

    def evaluate(self, engine, loader, max_batches: int, device) -> dict:
        return evaluate_loss(engine, loader, max_batches, device)


class PreferenceObjective:
    sequences_per_row = 2  # a chosen and a rejected answer

    def __init__(self, cfg, reference, device):
        self.cfg, self.reference = cfg, reference
        self.stats = RewardStats(device)

    def step(self, engine, batches, accum: int, device) -> torch.Tensor:
        return dpo_step(engine, batches, accum, device, self.reference, self.cfg, self.stats)

    def window(self) -> dict:
        return self.stats.read()

    def evaluate(self, engine, loader, max_batches: int, device) -> dict:
        return evaluate_preferences(engine, loader, max_batches, device, self.reference, self.cfg)


def build_objective(spec: RunSpec, dataset_dir: str, engine, rank: int, world: int, device):
    """The run's objective (its recipe chose it). DPO's reference is scored here (on the
    rows in ``dataset_dir``, this node's copy), before any checkpoint is loaded, while the
    engine still holds the starting weights."""
    if spec.objective == "next_token":
        return TokenObjective()
    cfg, paths, dpo = spec.cfg, spec.paths, spec.cfg.dpo
    from trainer.objectives.dpo_reference import (
        adapter_disabled_reference,
        model_key,
        precomputed_reference,
    )

    if dpo.disable_dropout:
        for module in engine.module.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0  # attention reads its dropout rate from the module too
    if cfg.lora.enabled:
        reference = adapter_disabled_reference(engine, device)
    else:
        precision = resolve_precision(cfg.trainer.precision, device.type == "cuda")
        micro = cfg.trainer.micro_batch_size
        key = model_key(cfg.model.name_or_path, precision, cfg.deepspeed.stage, world, micro)
        reference = precomputed_reference(
            engine, dataset_dir, paths.dataset_dir, key, micro, rank, world, device
        )
    return PreferenceObjective(dpo, reference, device)
