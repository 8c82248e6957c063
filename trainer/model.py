"""build_model: a causal LM from config or from_pretrained, ZeRO-3 aware.

Under ZeRO-3 the model must be created while an `HfDeepSpeedConfig` is alive: transformers
then builds it inside `deepspeed.zero.Init`, so each rank only materialises its partition
and the model's own weight init still runs (building the class by hand inside zero.Init
skipped that init here and started training at loss 42 instead of ln(vocab)).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.integrations import HfDeepSpeedConfig

from rundir.node_cache import local_copy
from schemas.training import ModelConfig


def architecture_config(cfg: ModelConfig, vocab_size: int, token_ids: dict) -> PretrainedConfig:
    """Our architecture fields mapped onto each transformers config class's own names."""
    inner = cfg.intermediate_size or 4 * cfg.hidden_size
    if cfg.model_type == "gpt2":
        fields: dict[str, Any] = dict(
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            n_positions=cfg.max_position_embeddings,
            n_inner=inner,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
        )
    else:
        fields = dict(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
            intermediate_size=inner,
            max_position_embeddings=cfg.max_position_embeddings,
            attention_dropout=cfg.dropout,
        )
    return AutoConfig.for_model(
        cfg.model_type,
        vocab_size=vocab_size,
        tie_word_embeddings=cfg.tie_word_embeddings,
        **token_ids,
        **fields,
    )


def special_token_ids(tokenizer) -> dict:
    # A from-scratch GPT-2 config keeps bos/eos 50256, outside a small trained vocabulary;
    # generation would then never stop on end-of-text. Take them from the tokenizer.
    return dict(
        bos_token_id=tokenizer.bos_token_id or tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(
    cfg: ModelConfig,
    tokenizer,
    ds_config: dict,
    dtype: torch.dtype,
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    zero3 = ds_config.get("zero_optimization", {}).get("stage") == 3
    # transformers sees this object through a weak reference: it must stay alive while the
    # model is created, and no longer, or later from_pretrained calls in this process
    # (an export reload, say) would also build partitioned models.
    live_ds_config = HfDeepSpeedConfig(ds_config) if zero3 else None
    token_ids = special_token_ids(tokenizer)
    if cfg.from_pretrained:
        # A base export at a URI is fetched onto this worker's node (once per node).
        model = AutoModelForCausalLM.from_pretrained(
            local_copy(cfg.name_or_path), dtype=dtype, attn_implementation=cfg.attn_implementation
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.update(token_ids)
    else:
        config = architecture_config(cfg, len(tokenizer), token_ids)
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=cfg.attn_implementation
        )
    model.generation_config.update(**token_ids)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    del live_ds_config
    return model


def count_parameters(model: torch.nn.Module) -> int:
    # ZeRO-3 partitions leave 0-element placeholders; ds_numel holds the real size.
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
