"""Records of fine-tuning and preference data, one dict each, from JSONL or Parquet files or a
`datasets` source, tagged with where they came from (``file:line``) so a bad one can be found
again. A record that cannot be parsed arrives with ``data=None`` and is counted by the caller.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dataprep.corpus import expand_globs
from schemas.fields import ConfigError

FILE_SOURCES = ("jsonl", "files")  # sft=jsonl, pref=files: .jsonl and .parquet globs


@dataclass
class Record:
    where: str  # "file.jsonl:12" or "#12": how a user finds it again
    data: dict | None  # None when the record could not be parsed
    problem: str = "malformed_json"  # why data is None


def _jsonl_records(path: Path) -> Iterator[Record]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Record(where, None, "invalid_utf8")
                continue
            except ValueError:
                data = None
            yield Record(where, data if isinstance(data, dict) else None)


def _parquet_records(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        row = 0
        for batch in batches:  # a batch at a time: a large file is never whole in memory
            for data in batch.to_pylist():
                row += 1
                yield Record(f"{path.name}#{row}", data)
    except Exception as e:  # not Parquet at all, or a corrupt page: the rest of the file is bad
        yield Record(path.name, None, f"unreadable_parquet ({type(e).__name__})")


def file_records(files: list[Path], key: str) -> Iterator[Record]:
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _jsonl_records(path)
        elif suffix == ".parquet":
            yield from _parquet_records(path)
        else:
            raise ConfigError(
                f"{key}: {str(path)!r} has suffix {suffix!r} (allowed: .jsonl, .parquet)"
            )


def is_validation_source(source: str, fraction: float) -> bool:
    """Stable across runs and machines (unlike hash()): a digest of the source tag."""
    bucket = int.from_bytes(hashlib.md5(source.encode()).digest()[:4], "big") % 10_000
    return bucket < fraction * 10_000


def held_out(key: str, split: str, fraction: float) -> bool:
    """Whether the source named ``key`` belongs to ``split`` ("train" or "test")."""
    return is_validation_source(key, fraction) == (split == "test")


def _dataset_records(name: str, config: str | None, split: str) -> Iterator[Record]:
    import datasets

    ds = datasets.load_dataset(name, config, split=split)
    for i, row in enumerate(ds):
        yield Record(f"{split}#{i}", row)


def split_records(
    cfg, split: str, section: str, embedded: Callable[[], Iterator[dict]]
) -> Iterator[Record]:
    """Raw records of ``split`` ("train" or "test") of an SFT or preference config (section
    "sft" or "pref"): its files (jsonl or files), a `datasets` source, or the ``embedded``
    records, whose "group" decides their side."""
    if cfg.source == "hf-dataset":
        own_split = cfg.hf_test_split if split == "test" and cfg.hf_test_split else cfg.hf_split
        for i, record in enumerate(_dataset_records(cfg.hf_name, cfg.hf_config, own_split)):
            if cfg.hf_test_split or held_out(f"#{i}", split, cfg.test_fraction):
                yield record
    elif cfg.source in FILE_SOURCES:
        if cfg.test_paths:
            key = f"{section}.{'test_' if split == 'test' else ''}paths"
            paths = cfg.paths if split == "train" else cfg.test_paths
            yield from file_records(expand_globs(paths, key, ".jsonl/.parquet"), key)
        else:
            files = expand_globs(cfg.paths, f"{section}.paths", ".jsonl/.parquet")
            for record in file_records(files, f"{section}.paths"):
                if held_out(record.where, split, cfg.test_fraction):
                    yield record
    else:
        for i, data in enumerate(embedded()):
            if held_out(data["group"], split, cfg.test_fraction):
                yield Record(f"#{i} ({data['prompt']})", data)
