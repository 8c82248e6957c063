"""The readers on Ray: a corpus (readers/documents.py) or a set of fine-tuning records
(readers/records.py) as a Ray Data dataset, read in parallel one file per task (a `datasets`
source by blocks; the embedded pairs, ~2,000, from the driver) with the per-file functions
the serial readers use."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import ray.data

from dataprep.readers.documents import corpus_items, hf_rows, hf_text_table, item_rows
from dataprep.readers.records import (
    FILE_SOURCES,
    Record,
    embedded_records,
    file_items,
    hf_batch_records,
    hf_splits,
    hf_table,
    item_records,
)
from schemas.data import DataConfig

MAX_READ_BLOCKS = 64
RECORDS = pa.schema([(k, pa.string()) for k in ("key", "split", "where", "record", "problem")])
# Held-out records sort before training ones: of two identical examples on both sides, the
# training copy is the duplicate that goes (decontamination against the test split).
KEY_PREFIX = {"test": "0:", "train": "1:"}


def documents_dataset(cfg: DataConfig, read_blocks: int = MAX_READ_BLOCKS) -> ray.data.Dataset:
    """Rows of readers/documents.py, in corpus order; data.max_documents counts records.
    Files are read in at most ``read_blocks`` tasks (a small corpus needs few)."""
    if cfg.source == "hf-dataset":
        ds = ray.data.from_huggingface(hf_text_table(cfg)).map_batches(
            hf_rows, batch_format="numpy", fn_kwargs={"name": cfg.hf_name, "field": cfg.text_field}
        )
    else:
        items = corpus_items(cfg)
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), read_blocks))
        kwargs = {"text_field": cfg.text_field, "max_record_bytes": cfg.max_record_bytes}
        ds = ds.flat_map(item_rows, fn_kwargs=kwargs)
    if cfg.max_documents is not None:
        ds = ds.limit(cfg.max_documents)  # records in corpus order, unreadable ones too
    return ds


def records_dataset(cfg, section: str) -> ray.data.Dataset:
    """Every record of both sides, in key order (RECORDS rows: ``split`` is the side,
    ``record`` the JSON of a parsed record, ``problem`` why one could not be parsed)."""
    if cfg.source in FILE_SOURCES:
        items = file_items(cfg, section)
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_READ_BLOCKS))
        kwargs = {"fraction": cfg.test_fraction, "max_bytes": cfg.max_record_bytes}
        return ds.flat_map(_file_rows, fn_kwargs=kwargs)
    if cfg.source == "hf-dataset":
        parts = []
        for index, (side, split) in enumerate(hf_splits(cfg)):
            kwargs = {"side": side, "split": split, "index": index, "fraction": cfg.test_fraction}
            part = ray.data.from_huggingface(hf_table(cfg, split))
            parts.append(part.map_batches(_hf_rows, batch_format="pyarrow", fn_kwargs=kwargs))
        return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    rows = [_record_row(side, 0, i, record) for side, i, record in embedded_records(cfg)]
    return ray.data.from_items(rows, override_num_blocks=4)


def _record_row(side: str, file_index: int, row: int, record: Record) -> dict:
    return {
        "key": f"{KEY_PREFIX[side]}{file_index:07d}:{row:09d}",
        "split": side,
        "where": record.where,
        "record": json.dumps(record.data) if record.data is not None else "",
        "problem": "" if record.data is not None else record.problem,
    }


def _file_rows(item: dict, fraction: float, max_bytes: int) -> Iterator[dict]:
    # A generator: a Ray task streams a large file's rows into blocks, never holds them all.
    for side, row, record in item_records(item, fraction, max_bytes):
        yield _record_row(side, item["index"], row, record)


def _hf_rows(batch: pa.Table, side: str, split: str, index: int, fraction: float) -> pa.Table:
    records = hf_batch_records(batch, side, split, fraction)
    rows = [_record_row(own, index, row, record) for own, row, record in records]
    return pa.Table.from_pylist(rows, schema=RECORDS)
