"""Tokenize and pack, the pretraining pipeline's last stage: documents encoded, each followed
by EOS, concatenated and cut into fixed-length rows of token ids."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

import numpy as np
import pyarrow as pa

from dataprep.filters.documents import kept_rows
from dataprep.memory import hands_back_memory
from dataprep.tokens.encoder import batch_encoder

# Documents per packing batch (a Ray Data map batch). The fast tokenizer encodes a batch on
# all of a task's threads at once, and a short last batch leaves them idle: on the embedded
# corpus `make bench`'s data_prep measured 0.72x of a raw `tokenizers` encode_batch with
# batches of 1,000 or 4,096 and 0.81x with 8,192. The price is memory: a batch holds its
# text and ids (8,192 web pages of ~5 KB is ~40 MB of text; split book-length documents).
PACK_BATCH_DOCS = 8192
ENCODE_SLICE_DOCS = 1024  # documents encoded at once (on all threads): bounded memory
PACKED = pa.schema([("input_ids", pa.list_(pa.int64()))])


def pack_documents(ids: Iterable[list[int]], eos: int, seq_len: int) -> np.ndarray:
    """(rows, seq_len) int64: ``ids`` joined with an EOS after each document; the tail
    shorter than one row is dropped (at most seq_len - 1 tokens per batch)."""
    stream = np.fromiter(chain.from_iterable(r + [eos] for r in ids), dtype=np.int64)
    usable = len(stream) - len(stream) % seq_len
    return stream[:usable].reshape(-1, seq_len)


@hands_back_memory
def tokenize_and_pack(
    batch: pa.Table, tokenizer_dir: str, seq_len: int, split: str | None = None, gone=frozenset()
) -> pa.Table:
    """The kept documents of ``split`` (not in ``gone``) tokenized and packed into rows."""
    encode, eos = batch_encoder(tokenizer_dir)
    if "drop" in batch.column_names:
        batch = kept_rows(batch, split, gone)
    texts = batch.column("text").to_pylist()

    # Slices consumed as packing reads them: only one slice's ids are Python lists at a
    # time (8,192 documents' at once took ~700 MB per task on the bench corpus, measured).
    def ids():
        for start in range(0, len(texts), ENCODE_SLICE_DOCS):
            yield from encode(texts[start : start + ENCODE_SLICE_DOCS])

    flat = pack_documents(ids(), eos, seq_len).reshape(-1)
    # One list per row over the flat ids without copying them: a list of NumPy rows went
    # through Arrow's per-row conversion (~100 MB more per task, measured).
    offsets = pa.array(range(0, len(flat) + 1, seq_len), pa.int32())
    return pa.table({"input_ids": pa.ListArray.from_arrays(offsets, flat)}, schema=PACKED)
