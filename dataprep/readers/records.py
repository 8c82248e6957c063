"""Records of fine-tuning and preference data, one dict each, from JSONL or Parquet files, a
`datasets` source or an embedded set, tagged with where they came from (``file:line``) so a
bad one can be found again, and with their side: "test" (held out) or "train". A record that
cannot be parsed arrives with ``data=None`` and is counted by the caller.

The side is the given test files' or split's, or else the held-out rule's on the record's
location (a file's line, a dataset's row) or, for the embedded pairs, on their package.
``iter_records`` reads one side in this process; readers/ray_datasets.py reads both on Ray
with the same per-file and per-batch functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dataprep.held_out import is_held_out
from dataprep.readers.embedded.summarization import stdlib_summary_pairs
from dataprep.readers.embedded.translation import translation_pairs
from dataprep.readers.files import check_suffixes, expand_globs
from dataprep.readers.hf import arrow_batches, load_split, numbered
from dataprep.readers.jsonl import read_jsonl
from dataprep.readers.parquet import MAX_EXPANSION, ExpandsTooMuch, parquet_batches
from dataprep.readers.stdlib_qa import stdlib_preference_pairs, stdlib_qa_pairs
from schemas.data import MAX_RECORD_BYTES

FILE_SOURCES = ("jsonl", "files")  # sft=jsonl, pref=files: .jsonl and .parquet globs
# The embedded sets, each read from its config: every pair has prompt, response and the
# group the held-out rule decides on.
EMBEDDED = {
    "stdlib-qa": lambda cfg: stdlib_qa_pairs(),
    "stdlib-pref": lambda cfg: stdlib_preference_pairs(),
    "translation": lambda cfg: translation_pairs(cfg.target_language),
    "summarization": lambda cfg: stdlib_summary_pairs(),
}
SUFFIXES = (".jsonl", ".parquet")
_JSONL_PROBLEMS = {"invalid_json": "malformed_json", "not_an_object": "malformed_json"}


@dataclass
class Record:
    where: str  # "file.jsonl:12" or "#12": how a user finds it again
    data: dict | None  # None when the record could not be parsed
    problem: str = "malformed_json"  # why data is None


def side_of(source: str, fraction: float) -> str:
    return "test" if is_held_out(source, fraction) else "train"


def file_items(cfg, section: str) -> list[dict]:
    """The files of a file source in order, one work item each: ``index``, ``path``, ``key``
    (the config key that names it) and ``side`` ("" when the held-out rule decides per
    record). A file of another kind is refused here, before any is read."""
    if cfg.test_paths:
        groups = [("train", "paths", cfg.paths), ("test", "test_paths", cfg.test_paths)]
    else:
        groups = [("", "paths", cfg.paths)]
    items = [
        {"path": path, "side": side, "key": f"{section}.{name}"}
        for side, name, patterns in groups
        for path in expand_globs(patterns, f"{section}.{name}", ".jsonl/.parquet")
    ]
    for item in items:
        check_suffixes([item["path"]], item["key"], SUFFIXES)
    return [item | {"index": i, "path": str(item["path"])} for i, item in enumerate(items)]


def item_records(
    item: dict, fraction: float, max_bytes: int = MAX_RECORD_BYTES
) -> Iterator[tuple[str, int, Record]]:
    """(side, row number in the file, record) of every record of one file, in file order;
    one over ``max_bytes`` is a bad record (too_large)."""
    for row, record in enumerate(_file_records(Path(item["path"]), max_bytes)):
        yield item["side"] or side_of(record.where, fraction), row, record


def _file_records(path: Path, max_bytes: int) -> Iterator[Record]:
    if path.suffix.lower() == ".jsonl":
        for line_no, data, problem in read_jsonl(path, max_bytes):
            where = f"{path.name}:{line_no}"
            if data is None:
                yield Record(where, None, _JSONL_PROBLEMS.get(problem, problem))
            else:
                yield Record(where, data)
        return
    row = 0
    try:
        for batch in parquet_batches(path):
            for data in batch.to_pylist():
                row += 1
                # A row's size as the JSON it travels as (readers/ray_datasets.py dumps it).
                big = len(json.dumps(data, default=str, ensure_ascii=False)) > max_bytes
                yield Record(f"{path.name}#{row}", None if big else data, "too_large")
    except ExpandsTooMuch:
        yield Record(path.name, None, f"parquet_expands_over_{MAX_EXPANSION}x")
    except Exception as e:  # not Parquet at all, or a corrupt page: the rest of the file is bad
        yield Record(path.name, None, f"unreadable_parquet ({type(e).__name__})")


def hf_splits(cfg) -> list[tuple[str, str]]:
    """(side, split name) of a `datasets` source: its own test split, or one split whose rows
    the held-out rule divides (side "")."""
    if cfg.hf_test_split:
        return [("train", cfg.hf_split), ("test", cfg.hf_test_split)]
    return [("", cfg.hf_split)]


def hf_table(cfg, split: str):
    """One split of a `datasets` source, each row numbered in ``__row``."""
    return numbered(load_split(cfg.hf_name, cfg.hf_config, split), "__row")


def hf_batch_records(
    batch, side: str, split: str, fraction: float
) -> Iterator[tuple[str, int, Record]]:
    """(side, row number, record) of each row of an Arrow batch of ``hf_table``."""
    for data in batch.to_pylist():
        row = data.pop("__row")
        yield side or side_of(f"#{row}", fraction), row, Record(f"{split}#{row}", data)


def embedded_records(cfg) -> Iterator[tuple[str, int, Record]]:
    """(side, number, record) of the embedded pairs: whole groups (packages, modules, source
    strings) are held out."""
    for i, data in enumerate(EMBEDDED[cfg.source](cfg)):
        side = side_of(data["group"], cfg.test_fraction)
        yield side, i, Record(f"#{i} ({data['prompt']})", data)


def iter_records(cfg, split: str, section: str) -> Iterator[Record]:
    """The records of ``split`` ("train" or "test") of an SFT or preference config (section
    "sft" or "pref"), read in this process."""
    if cfg.source in FILE_SOURCES:
        for item in file_items(cfg, section):
            if item["side"] in ("", split):
                yield from (
                    r
                    for side, _, r in item_records(item, cfg.test_fraction, cfg.max_record_bytes)
                    if side == split
                )
    elif cfg.source == "hf-dataset":
        for side, name in hf_splits(cfg):
            if side in ("", split):
                for batch in arrow_batches(hf_table(cfg, name)):
                    records = hf_batch_records(batch, side, name, cfg.test_fraction)
                    yield from (r for s, _, r in records if s == split)
    else:
        yield from (r for side, _, r in embedded_records(cfg) if side == split)


def record_files(cfg, section: str) -> list[Path]:
    """The local files an SFT or preference config reads (its cache key depends on them)."""
    if cfg.source in FILE_SOURCES:
        return expand_globs(cfg.paths + cfg.test_paths, f"{section}.paths", ".jsonl/.parquet")
    if cfg.source == "hf-dataset" and Path(cfg.hf_name).exists():
        return sorted(p for p in Path(cfg.hf_name).rglob("*") if p.is_file())
    return []
