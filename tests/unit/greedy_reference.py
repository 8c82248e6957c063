"""What transformers' own generate() decodes greedily: the reference serving tests compare
zeroray's batched decoding with."""

from __future__ import annotations

import torch


def reference_ids(gen, prompt: list[int], max_new_tokens: int, **generate_kwargs) -> list[int]:
    """Greedy ids from transformers' own generate() on the prompt alone (no padding);
    ``gen``: a serve.generator.Generator; ``generate_kwargs``: more of generate()'s own
    settings (repetition_penalty, say)."""
    ids = torch.tensor([prompt])
    out = gen.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=gen.tokenizer.pad_token_id,
        **generate_kwargs,
    )
    return out[0, len(prompt) :].tolist()
