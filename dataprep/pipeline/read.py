"""The corpus as a Ray Data dataset of documents, read in parallel one file per task.

Rows: ``key`` (file index and position, zero-padded: sorting by key is corpus order),
``source`` (the split is decided by it: a file's path below the corpus folder), ``text``,
and for a record that could not be read ``bad`` (the reason) and ``where`` (file:line)
with no text.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray.data

from dataprep.bad_records import BadRecords
from dataprep.corpus import (
    Document,
    _docstrings,
    _file_documents,
    _pydoc_topics,
    expand_globs,
    stdlib_dir,
    stdlib_files,
)
from schemas.data import DataConfig


def _rows(file_index: int, docs, bad: BadRecords) -> list[dict]:
    rows = [
        {
            "key": f"{file_index:07d}:{i:09d}",
            "source": d.source,
            "text": d.text,
            "bad": "",
            "where": "",
        }
        for i, d in enumerate(docs)
    ]
    for reason, count in bad.counts.items():
        where = bad.where[reason]
        for j in range(count):  # every skipped record counts; the first few keep a location
            rows.append(
                {
                    "key": f"{file_index:07d}:~{reason}:{j:09d}",
                    "source": "",
                    "text": "",
                    "bad": reason,
                    "where": where[j] if j < len(where) else "",
                }
            )
    return rows


def _read_file(item: dict, text_field: str) -> list[dict]:
    bad = BadRecords()
    docs = _file_documents(Path(item["path"]), text_field, bad)
    return _rows(item["index"], [Document(item["source"], d.text) for d in docs], bad)


def _read_stdlib_file(item: dict) -> list[dict]:
    root, path = stdlib_dir(), Path(item["path"])
    if item["index"] == 0:
        docs = list(_pydoc_topics(root))
    else:
        docs = list(_docstrings(path, root))
    return _rows(item["index"], docs, BadRecords())


def read_documents(cfg: DataConfig) -> ray.data.Dataset:
    if cfg.source == "hf-dataset":
        return _hf_documents(cfg)
    if cfg.source == "pydoc":
        root = stdlib_dir()
        files = stdlib_files(root)
        items = [{"index": 0, "path": str(root / "pydoc_data" / "topics.py")}]
        items += [{"index": i + 1, "path": str(p)} for i, p in enumerate(files)]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 64))
        ds = ds.flat_map(_read_stdlib_file)
    else:
        files = expand_globs(cfg.paths)
        # A file's source (what decides its split) is its path below the corpus's common
        # folder: the split stays the same when the corpus moves.
        base = Path(os.path.commonpath([p.parent.resolve() for p in files]))
        items = [
            {"index": i, "path": str(p), "source": str(p.resolve().relative_to(base))}
            for i, p in enumerate(files)
        ]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 64))
        ds = ds.flat_map(_read_file, fn_kwargs={"text_field": cfg.text_field})
    if cfg.max_documents is not None:
        ds = ds.limit(cfg.max_documents)  # records in corpus order, unreadable ones too
    return ds


def _hf_documents(cfg: DataConfig) -> ray.data.Dataset:
    import datasets
    import numpy as np

    from schemas.fields import ConfigError

    table = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=cfg.hf_split)
    if cfg.text_field not in table.column_names:
        raise ConfigError(
            f"data.text_field={cfg.text_field!r} is not a column of "
            f"{cfg.hf_name} (allowed: {', '.join(table.column_names)})"
        )
    table = table.select_columns([cfg.text_field]).add_column("row", np.arange(len(table)))
    name, field = cfg.hf_name, cfg.text_field

    def to_documents(batch: dict) -> dict:
        rows = [int(r) for r in batch["row"]]
        return {
            "key": [f"{r:017d}" for r in rows],
            # Blocks of 100 rows share a source tag so the split holds whole neighbourhoods.
            "source": [f"{name}#{r // 100}" for r in rows],
            "text": [t or "" for t in batch[field]],
            "bad": [""] * len(rows),
            "where": [""] * len(rows),
        }

    ds = ray.data.from_huggingface(table).map_batches(to_documents, batch_format="numpy")
    return ds.limit(cfg.max_documents) if cfg.max_documents is not None else ds
