"""Tokenize documents with `datasets.map(batched=True)` and pack them into fixed-length blocks."""

from __future__ import annotations

from itertools import chain

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase


def tokenize_and_pack(
    texts: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int,
    num_proc: int | None = None,
    desc: str = "",
) -> datasets.Dataset:
    """Each document is followed by EOS, documents are concatenated, and the stream is cut
    into ``seq_len``-token rows. The tail shorter than one block of each map batch is dropped
    (at most seq_len - 1 tokens per 1,000 documents)."""
    eos = tokenizer.eos_token_id

    def tokenize_and_pack_batch(batch: dict) -> dict:
        # One pass (no intermediate tokenized table) and no attention masks: make bench
        # measured 0.56x of a raw `tokenizers` encode_batch before this, 0.69x after.
        # (Calling the Rust tokenizer directly gained nothing more: the rest is Arrow I/O.)
        ids = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False)
        rows = ids["input_ids"]
        stream = np.fromiter(chain.from_iterable(r + [eos] for r in rows), dtype=np.int64)
        usable = len(stream) - len(stream) % seq_len
        return {"input_ids": stream[:usable].reshape(-1, seq_len)}

    return texts.map(
        tokenize_and_pack_batch,
        batched=True,
        batch_size=1000,
        remove_columns=texts.column_names,
        num_proc=num_proc,
        desc=f"tokenize + pack {desc}".strip(),
    )
