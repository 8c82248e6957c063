"""Parquet files, read a batch of rows at a time: a large file is never whole in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 1024


def parquet_rows(path: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Each row as a dict (of ``columns`` only, when given). A file that is not Parquet, a
    corrupt page or a column the file lacks raises pyarrow's ArrowInvalid (what
    ``pq.read_table`` raises for all three) when the rows are read."""
    file = pq.ParquetFile(path)
    missing = [c for c in columns or () if c not in file.schema_arrow.names]
    if missing:
        raise pa.ArrowInvalid(f"{path}: no column {missing[0]!r}")
    for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        yield from batch.to_pylist()
