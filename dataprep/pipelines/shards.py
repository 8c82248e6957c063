"""Parquet written and read back by the Ray Data pipelines: shards named the same on every
run, the filtered corpus kept on disk between passes, rows counted from the files' footers."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import ray.data
from ray.data.context import DataContext
from ray.data.datasource import FilenameProvider

from dataprep.filters.documents import MARKED


def keep_order() -> None:
    """Rows in the same order on every run: a rerun writes the same bytes."""
    DataContext.get_current().execution_options.preserve_order = True


class ShardNames(FilenameProvider):
    """shard-<write task>: the same names on every run, in corpus order (Ray's default
    names carry a random write id)."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"shard-{task_index:06d}"


def write_shards(ds: ray.data.Dataset, directory: Path) -> None:
    """``directory``/shard-*.parquet; a fresh directory, so nothing is overwritten."""
    ds.write_parquet(
        str(directory), filename_provider=ShardNames(), mode=ray.data.SaveMode.OVERWRITE
    )


def rows_written(directory: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(directory.glob("*.parquet")))


class MarkedCorpus:
    """The filter stage's output (every document with its verdict, kept texts cleaned),
    written once to Parquet and read back by each later pass, only the columns it needs.
    Materialized in the object store instead, the whole corpus sat in memory until the
    end: 1.06 GB of it at the 1 GiB bench corpus, 0.1 GB at 100 MiB (measured)."""

    def __init__(self, files: list[str]):
        self.files = files

    @classmethod
    def write(cls, ds: ray.data.Dataset, directory: Path) -> MarkedCorpus:
        write_shards(ds, directory)
        return cls(sorted(str(f) for f in directory.glob("*.parquet")))  # corpus order

    def read(self, columns: list[str] | None = None, without=()) -> ray.data.Dataset:
        names = columns or [n for n in MARKED.names if n not in without]
        if not self.files:  # nothing read at all: the empty-corpus error comes next
            return ray.data.from_arrow(MARKED.empty_table().select(names))
        return ray.data.read_parquet(self.files, columns=names)
