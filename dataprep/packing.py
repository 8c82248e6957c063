"""Packing: documents, each followed by EOS, concatenated and cut into fixed-length rows."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

import numpy as np

# Documents per packing batch (a Ray Data map batch). The fast tokenizer encodes a batch on
# all of a task's threads at once, and a short last batch leaves them idle: on the embedded
# corpus `make bench`'s data_prep measured 0.72x of a raw `tokenizers` encode_batch with
# batches of 1,000 or 4,096 and 0.81x with 8,192. The price is memory: a batch holds its
# text and ids (8,192 web pages of ~5 KB is ~40 MB of text; split book-length documents).
PACK_BATCH_DOCS = 8192


def pack_documents(ids: Iterable[list[int]], eos: int, seq_len: int) -> np.ndarray:
    """(rows, seq_len) int64: ``ids`` joined with an EOS after each document; the tail
    shorter than one row is dropped (at most seq_len - 1 tokens per batch)."""
    stream = np.fromiter(chain.from_iterable(r + [eos] for r in ids), dtype=np.int64)
    usable = len(stream) - len(stream) % seq_len
    return stream[:usable].reshape(-1, seq_len)
