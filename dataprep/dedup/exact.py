"""Exact deduplication: documents (or fine-tuning examples) with the same digest of their
cleaned text are copies; each but the first in corpus order goes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from dataprep.dedup.groups import linked_pairs, local_pairs, partitions_for
from dataprep.filters.documents import kept_rows

if TYPE_CHECKING:
    import ray.data

DIGESTS = pa.schema([("key", pa.string()), ("digest", pa.string()), ("part", pa.int64())])


def _partition(hex_digest: str, partitions: int) -> int:
    """The shuffle partition of a digest: its (already uniform) first bits."""
    return int(hex_digest[:8], 16) % partitions


def digest_rows(batch: pa.Table, partitions: int) -> pa.Table:
    """(key, digest, part) of the kept documents: what exact deduplication groups on."""
    batch = kept_rows(batch)
    digests = batch.column("digest").to_pylist()
    parts = [_partition(d, partitions) for d in digests]
    return pa.table({"key": batch.column("key"), "digest": digests, "part": parts}, schema=DIGESTS)


# Up to this many documents their (key, digest) rows, ~10 MB, are grouped in the driver: a
# hash shuffle's fixed cost (16 partitions' tasks) was 9 s for the 700 examples of the
# translation recipe on 2 busy cores, for milliseconds of grouping.
LOCAL_ROWS = 100_000


def exact_duplicates(marked: ray.data.Dataset, documents: int) -> dict[str, str]:
    """key -> the key of the earlier document with the same cleaned text (``marked``: rows
    with key, drop and digest; ``documents``: how many passed the filters)."""
    if documents <= LOCAL_ROWS:
        rows = marked.map_batches(digest_rows, batch_format="pyarrow", fn_kwargs={"partitions": 1})
        batches = rows.iter_batches(batch_size=None, batch_format="pyarrow")
        table = pa.concat_tables([DIGESTS.empty_table(), *batches])
        return {other: first for first, other in local_pairs(table, ["digest"])}
    partitions = partitions_for(documents)
    digests = marked.map_batches(
        digest_rows, batch_format="pyarrow", fn_kwargs={"partitions": partitions}
    )
    return {other: first for first, other in linked_pairs(digests, ["digest"], partitions)}


def exact_duplicates_local(marked: pa.Table) -> dict[str, str]:
    """``exact_duplicates`` of a corpus small enough for one task (the same rows, grouped
    without a shuffle)."""
    pairs = local_pairs(digest_rows(marked, partitions=1), ["digest"])
    return {other: first for first, other in pairs}
