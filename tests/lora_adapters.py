"""Tiny LoRA adapters for the multi-LoRA serving tests: a few AdamW steps of the project's
own LoRA wrapping (trainer/lora.py) on a base export, each adapter on its own text, saved
in peft's layout with the tokenizer (as `lora.merge_on_export=false` exports)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from schemas.training import LoraConfig
from trainer.lora import apply_lora

# Two different corpora, so the two adapters learn different updates.
ADAPTER_TEXTS = {
    "alpha": ["Return the value of the key in the dictionary, or raise a KeyError."] * 2,
    "beta": ["The socket is closed and the file descriptor is released to the system."] * 2,
}


def train_adapter(base_dir, texts: list[str], out_dir, seed: int = 0, steps: int = 12) -> str:
    """Trains a rank-4 adapter on c_attn and c_proj for ``steps`` steps; returns out_dir."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = apply_lora(
        base,
        LoraConfig(enabled=True, rank=4, alpha=8, dropout=0.0, target_modules=["c_attn", "c_proj"]),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    for step in range(steps):
        ids = torch.tensor([tokenizer.encode(texts[step % len(texts)])])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)
