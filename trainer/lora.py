"""LoRA through peft: wrap the built model before DeepSpeed sees it, so only the adapter's
parameters reach the optimizer (param_groups skips frozen ones) and ZeRO shards only them."""

from __future__ import annotations

import torch

from schemas.training import LoraConfig


def apply_lora(model: torch.nn.Module, cfg: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        # None: peft's per-architecture default (GPT-2: c_attn; Llama: q_proj, v_proj).
        target_modules=list(cfg.target_modules) if cfg.target_modules else None,
        # GPT-2's projections are Conv1D layers, which store their weights transposed.
        fan_in_fan_out=model.config.model_type == "gpt2",
    )
    return get_peft_model(model, peft_config)


def is_peft_model(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def trainable_fraction(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
