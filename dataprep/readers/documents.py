"""The pretraining corpus's documents: pydoc (topics and stdlib docstrings), text files
(.txt paragraphs, a JSONL or Parquet text field) or a `datasets` column, each tagged with its
source, which decides the train/validation split (a file's path below the corpus folder: the
split stays the same when the corpus moves).

Rows, one per document, as the pipeline reads them: ``key`` (file index and position,
zero-padded: sorting by key is corpus order), ``source``, ``text``, and for a record that
could not be read ``bad`` (the reason) and ``where`` (file:line) with no text. The Ray path
(readers/ray_datasets.py) runs ``item_rows`` on each file in a task; ``iter_documents`` runs
the same functions in this process, for tests, benchmarks and evaluation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from dataprep.bad_records import BadRecords
from dataprep.readers.files import check_suffixes, expand_globs, file_stamps, local_file
from dataprep.readers.hf import column_batches, load_split, numbered
from dataprep.readers.jsonl import read_jsonl
from dataprep.readers.parquet import MAX_EXPANSION, ExpandsTooMuch, parquet_batches
from dataprep.readers.pydoc import TOPICS, docstring_texts, stdlib_dir, stdlib_files, topic_texts
from dataprep.readers.text import paragraphs
from rundir.store import is_uri
from schemas.data import MAX_RECORD_BYTES, DataConfig
from schemas.fields import ConfigError

SUFFIXES = (".txt", ".jsonl", ".parquet")
# A pretraining report names bad records in words (read_jsonl's codes, as the report says them).
_JSONL_PROBLEMS = {
    "invalid_utf8": "invalid UTF-8",
    "invalid_json": "invalid JSON",
    "not_an_object": "not a JSON object",
    "too_large": "too_large",
    "too_deep": "nested too deeply",
}


@dataclass(frozen=True)
class Document:
    source: str
    text: str


def corpus_items(cfg: DataConfig) -> list[dict]:
    """The files of a pydoc or text-files corpus in corpus order, one work item each:
    ``index``, ``path``, ``kind`` (topics, docstrings or file) and a file's ``source``."""
    if cfg.source == "pydoc":
        root = stdlib_dir()
        items = [{"index": 0, "path": str(root / TOPICS), "kind": "topics"}]
        files = stdlib_files(root)
        return items + [
            {"index": i + 1, "path": str(p), "kind": "docstrings"} for i, p in enumerate(files)
        ]
    files = expand_globs(cfg.paths, uris=True)
    check_suffixes(files, "data.paths", SUFFIXES)
    # A file's source is its path below the corpus's common folder (in a store: its key's).
    names = [_name(p) for p in files]
    base = os.path.commonpath([os.path.dirname(n) for n in names])
    return [
        {"index": i, "path": str(p), "kind": "file", "source": os.path.relpath(n, base)}
        for i, (p, n) in enumerate(zip(files, names))
    ]


def _name(path: Path | str) -> str:
    """A file's absolute path, or an object's bucket/key."""
    if is_uri(path):
        return "/" + str(path).partition("?")[0].split("://", 1)[1]
    return str(Path(path).resolve())


def item_rows(
    item: dict, text_field: str, max_record_bytes: int = MAX_RECORD_BYTES
) -> Iterator[dict]:
    """The rows of one file as it is read (a Ray task streams them into blocks; a large
    file is never whole in memory): its documents, then one row per record it could not
    read."""
    bad = BadRecords()
    docs = _item_documents(item, text_field, max_record_bytes, bad)
    for i, (source, text) in enumerate(docs):
        yield {
            "key": f"{item['index']:07d}:{i:09d}",
            "source": source,
            "text": text,
            "bad": "",
            "where": "",
        }
    for reason, count in bad.counts.items():
        where = bad.where[reason]
        for j in range(count):  # every skipped record counts; the first few keep a location
            yield {
                "key": f"{item['index']:07d}:~{reason}:{j:09d}",
                "source": "",
                "text": "",
                "bad": reason,
                "where": where[j] if j < len(where) else "",
            }


def _item_documents(
    item: dict, text_field: str, max_bytes: int, bad: BadRecords
) -> Iterator[tuple[str, str]]:
    path = Path(item["path"])
    if item["kind"] == "topics":
        yield from topic_texts(stdlib_dir())
    elif item["kind"] == "docstrings":
        yield from docstring_texts(path, stdlib_dir())
    else:
        with local_file(item["path"]) as copy:  # a file in a store: a temporary copy
            texts = _file_texts(copy, text_field, max_bytes, bad, str(item["path"]))
            yield from ((item["source"], text) for text in texts)


def _file_texts(
    path: Path, text_field: str, max_bytes: int, bad: BadRecords, name: str
) -> Iterator[str]:
    """A file's documents; what cannot be read is counted in ``bad`` with its location in
    the file called ``name`` (its path, or the URI ``path`` is a local copy of)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        yield from paragraphs(path, bad, max_bytes, name)
    elif suffix == ".jsonl":
        for line_no, record, problem in read_jsonl(path, max_bytes):
            where = f"{name}:{line_no}"
            bad.seen += 1
            value = record.get(text_field) if record is not None else None
            if record is None:
                bad.add(_JSONL_PROBLEMS[problem], where)
            elif not isinstance(value, str):
                bad.add(f"no string {text_field!r}", where)
            else:
                yield value
    else:
        yield from _parquet_texts(path, text_field, max_bytes, bad, name)


def _parquet_texts(
    path: Path, text_field: str, max_bytes: int, bad: BadRecords, name: str
) -> Iterator[str]:
    """A Parquet file's text column a batch at a time; a value over ``max_bytes`` is
    too_large (measured in Arrow, never turned into a str). A file that is not Parquet, lacks
    the column or expands too much, or the rest of one whose page is corrupt, is one bad
    record."""
    try:
        for batch in parquet_batches(path, [text_field]):
            column = batch.column(0)
            if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
                bad.seen += len(column)
                for _ in range(len(column)):
                    bad.add(f"no string {text_field!r}", name)
                continue
            fits = pc.less_equal(pc.fill_null(pc.binary_length(column), 0), max_bytes)
            values = column.filter(fits).to_pylist()
            for _ in range(len(column) - len(values)):
                bad.seen += 1
                bad.add("too_large", name)
            for value in values:
                bad.seen += 1
                if isinstance(value, str):
                    yield value
                else:
                    bad.add(f"no string {text_field!r}", name)
    except ExpandsTooMuch:
        bad.seen += 1
        bad.add(f"Parquet expands over {MAX_EXPANSION}x its size", name)
    except Exception as e:  # not Parquet, or no such column: the file is one bad record
        bad.seen += 1
        bad.add(f"unreadable Parquet ({type(e).__name__})", name)


def hf_text_table(cfg: DataConfig):
    """The text column of a `datasets` source, each row numbered in ``row``."""
    table = load_split(cfg.hf_name, cfg.hf_config, cfg.hf_split)
    if cfg.text_field not in table.column_names:
        raise ConfigError(
            f"data.text_field={cfg.text_field!r} is not a column of "
            f"{cfg.hf_name} (allowed: {', '.join(table.column_names)})"
        )
    return numbered(table.select_columns([cfg.text_field]), "row")


def hf_rows(batch: dict, name: str, field: str) -> dict:
    """The rows of a batch of ``hf_text_table``: blocks of 100 rows share a source tag, so
    the split holds whole neighbourhoods."""
    rows = [int(r) for r in batch["row"]]
    return {
        "key": [f"{r:017d}" for r in rows],
        "source": [f"{name}#{r // 100}" for r in rows],
        "text": [t or "" for t in batch[field]],
        "bad": [""] * len(rows),
        "where": [""] * len(rows),
    }


def corpus_rows(cfg: DataConfig) -> Iterator[dict]:
    """Every row of the corpus in corpus order, read in this process (before the limit of
    data.max_documents, which counts unreadable records too, as the pipeline's does)."""
    if cfg.source == "hf-dataset":
        for batch in column_batches(hf_text_table(cfg)):
            columns = hf_rows(batch, cfg.hf_name, cfg.text_field)
            yield from (dict(zip(columns, row)) for row in zip(*columns.values()))
        return
    for item in tqdm(corpus_items(cfg), desc="read corpus files", unit="file", mininterval=1.0):
        yield from item_rows(item, cfg.text_field, cfg.max_record_bytes)


def iter_documents(cfg: DataConfig, bad: BadRecords | None = None) -> Iterator[Document]:
    """The documents the pipeline reads, in its order, read in this process; records that
    cannot be read go to ``bad``."""
    bad = bad if bad is not None else BadRecords()
    for row in islice(corpus_rows(cfg), cfg.max_documents):
        bad.seen += 1
        if row["bad"]:
            bad.add(row["bad"], row["where"])
        else:
            yield Document(row["source"], row["text"])


def pydoc_corpus() -> Iterator[Document]:
    """pydoc's topic help plus every docstring of the standard library's own source."""
    return iter_documents(DataConfig(source="pydoc"))


def input_fingerprint(cfg: DataConfig) -> list:
    """What the raw input depends on, for the prepared-data cache key (a glob that matches
    nothing is refused here, before anything starts)."""
    if cfg.source == "pydoc":
        return [sys.version, str(stdlib_dir())]
    if cfg.source == "text-files":
        return file_stamps(expand_globs(cfg.paths, uris=True))
    local = Path(cfg.hf_name)
    if local.exists():
        return file_stamps(sorted(p for p in local.rglob("*") if p.is_file()), resolve=False)
    return [cfg.hf_name, cfg.hf_config, cfg.hf_split]
