"""Tokenize documents with `datasets.map(batched=True)` and pack them into fixed-length blocks."""

from __future__ import annotations

import datasets
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

    def tokenize(batch: dict) -> dict:
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [row + [eos] for row in ids]}

    def pack(batch: dict) -> dict:
        stream = [t for row in batch["input_ids"] for t in row]
        usable = len(stream) - len(stream) % seq_len
        return {"input_ids": [stream[i : i + seq_len] for i in range(0, usable, seq_len)]}

    tokenized = texts.map(
        tokenize,
        batched=True,
        remove_columns=texts.column_names,
        num_proc=num_proc,
        desc=f"tokenize {desc}".strip(),
    )
    return tokenized.map(
        pack, batched=True, batch_size=1000, num_proc=num_proc, desc=f"pack {desc}".strip()
    )
