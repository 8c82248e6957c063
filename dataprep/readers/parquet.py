"""Parquet files, read a bounded batch of rows at a time: a large file is never whole in
memory, and a file that would expand far beyond its size (a dictionary bomb: one 1 MiB value
compressed into a 500-byte file and repeated in 20,000 rows is 20 GB decoded) is refused
from its footer before a page is read, and stopped while read if its footer lied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MAX_BATCH_ROWS = 1024
BATCH_BYTES = 16 * 2**20  # decoded bytes a batch aims at (from the footer's sizes)
# Decoded bytes allowed per byte of file. Text compresses 3-5x with zstd, very repetitive
# text (logs, boilerplate) 10-30x; 100x leaves that room and refuses the bomb above (2,000x).
MAX_EXPANSION = 100


class ExpandsTooMuch(ValueError):
    """A Parquet file that decodes to more than MAX_EXPANSION times its size."""


def parquet_batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Batches of the file's rows (of ``columns`` only, when given), each about BATCH_BYTES
    decoded. ExpandsTooMuch when the footer says the columns expand more than MAX_EXPANSION
    times the file's size, or hold more rows than the file has bytes (no real record costs
    under a byte: rows repeating one dictionary entry do), or when what is read does. A file
    that is not Parquet, a corrupt page or a column the file lacks raise pyarrow's
    ArrowInvalid (what ``pq.read_table`` raises for all three)."""
    file = pq.ParquetFile(path)
    missing = [c for c in columns or () if c not in file.schema_arrow.names]
    if missing:
        raise pa.ArrowInvalid(f"{path}: no column {missing[0]!r}")
    size = path.stat().st_size
    allowed = MAX_EXPANSION * size
    stated = _uncompressed_bytes(file.metadata, columns)
    if stated > allowed or file.metadata.num_rows > size:
        raise ExpandsTooMuch(
            f"{path}: {file.metadata.num_rows} rows, {stated} bytes uncompressed from {size}"
        )
    rows = file.metadata.num_rows
    batch_rows = MAX_BATCH_ROWS if not stated else rows * BATCH_BYTES // stated
    decoded = 0
    for batch in file.iter_batches(
        batch_size=max(1, min(MAX_BATCH_ROWS, batch_rows)), columns=columns
    ):
        decoded += batch.nbytes
        if decoded > allowed + BATCH_BYTES:  # the footer's sizes understated the pages
            raise ExpandsTooMuch(f"{path}: over {decoded} bytes decoded from {size}")
        yield batch


def _uncompressed_bytes(meta: pq.FileMetaData, columns: list[str] | None) -> int:
    """The footer's uncompressed size of ``columns`` (every column when None), all pages."""
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if columns is None or chunk.path_in_schema.split(".")[0] in columns:
                total += chunk.total_uncompressed_size
    return total
