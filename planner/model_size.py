"""Exact parameter counts of the configured model, built on the meta device (no memory, no
weights read): the same `transformers` classes and config the training run builds."""

from __future__ import annotations

from dataclasses import dataclass

from rundir.node_cache import local_copy
from schemas.jobs import TrainJobConfig
from schemas.training import LoraConfig

# DeepSpeed's stage3_param_persistence_threshold default: ZeRO-3 does not partition tensors
# smaller than this (norms, biases; in a tiny model nearly all), every device holds them.
PERSISTENCE_THRESHOLD = 100_000


@dataclass
class ModelSize:
    total: int  # parameters, tied ones counted once
    trainable: int  # what the optimizer holds: all of them, or the LoRA adapter
    largest_layer: int  # parameters of the largest single module (ZeRO-3 gathers one at a time)
    persistent: int  # parameters ZeRO-3 keeps whole on every device (small ones, see below)
    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int


def hf_config(cfg: TrainJobConfig):
    """The transformers config a run would build: from the checkpoint's config.json with
    model=pretrained, else from the model section (vocabulary: the tokenizer's size)."""
    from transformers import AutoConfig

    from trainer.model import architecture_config

    if cfg.model.from_pretrained:
        return AutoConfig.from_pretrained(local_copy(cfg.model.name_or_path))
    vocab = cfg.tokenizer.vocab_size if cfg.tokenizer.kind == "train-bpe" else None
    if vocab is None:
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(cfg.tokenizer.name_or_path))
    # No special token ids: GPT-2's defaults (50256) lie outside a small trained vocabulary.
    no_ids = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    return architecture_config(cfg.model, vocab, no_ids)


def measure_model(cfg: TrainJobConfig, lora: LoraConfig | None = None) -> ModelSize:
    """``lora``: the adapter to count instead of ``cfg.lora`` (the plan tries both)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = hf_config(cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        lora = lora or cfg.lora
        if lora.enabled:
            from trainer.lora import apply_lora

            model = apply_lora(model, lora)
    params = list(model.parameters())  # unique tensors: tied embeddings appear once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ModelSize(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        largest_layer=largest,
        persistent=sum(p.numel() for p in params if p.numel() < PERSISTENCE_THRESHOLD),
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        vocab_size=config.vocab_size,
    )
