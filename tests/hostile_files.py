"""Hostile data files, built cheaply, for the readers' unit tests and the `make prepare`
test: a Parquet dictionary bomb and a JSONL line of any length."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def dictionary_bomb(path: Path, rows: int = 20_000, value_bytes: int = 2**20) -> Path:
    """~500 bytes on disk, rows x value_bytes decoded (20 GB by default): one dictionary
    entry of repeated bytes, zstd-compressed, that every row points at."""
    values = pa.DictionaryArray.from_arrays(
        pa.array([0] * rows, pa.int32()), pa.array(["a" * value_bytes])
    )
    table = pa.table({"text": values})
    pq.write_table(table, path, compression="zstd", compression_level=22, write_statistics=False)
    return path


def long_line(path: Path, length: int) -> Path:
    """A JSONL file of one line of ``length`` bytes, written in a moment: its middle is a
    hole (NUL bytes the filesystem does not store), read back like any other bytes."""
    with path.open("wb") as f:
        f.write(b'{"text": "')
        f.truncate(length - 3)
        f.seek(length - 3)
        f.write(b'"}\n')
    return path
