"""`datasets` sources (a hub name, online only, or a local dataset directory): a split, its
rows numbered so that a row's source tag and location survive any later reordering, and the
batches the serial path reads it in (the Ray path hands the same batches to the same
functions through Ray Data's map_batches)."""

from __future__ import annotations

from collections.abc import Iterator


def load_split(name: str, config: str | None, split: str):
    """One split of a `datasets` source, as a `datasets.Dataset`."""
    import datasets

    return datasets.load_dataset(name, config, split=split)


def numbered(table, column: str):
    """``table`` with each row's number in ``column``."""
    import numpy as np

    return table.add_column(column, np.arange(len(table)))


def arrow_batches(table, rows: int = 1000) -> Iterator:
    """Arrow tables, as map_batches(batch_format="pyarrow") hands them over."""
    return table.with_format("arrow").iter(batch_size=rows)


def column_batches(table, rows: int = 1000) -> Iterator[dict]:
    """{column: values}, as map_batches(batch_format="numpy") hands them over."""
    return table.iter(batch_size=rows)
