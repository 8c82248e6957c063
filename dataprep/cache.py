"""Every preparation's cached directory: ``<cache_dir>/<kind>-<key>``, the key a hash of every
input and setting, built under a temporary name and renamed when complete, so a second run
with the same inputs reuses it and a crashed run never leaves a half-written one behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PreparedData:
    dataset_dir: str  # train/ and validation/ Parquet shards (or a DatasetDict)
    tokenizer_dir: str
    stats: dict
    cache_hit: bool


def cache_key(payload: dict) -> str:
    """16 hex digits of the SHA-256 of the payload's JSON (sorted keys, str for the rest)."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def prepare_cached(
    cache_dir: str, kind: str, payload: dict, build: Callable[[Path, Path], dict]
) -> PreparedData:
    """The directory of ``kind`` ("data", "sft", "pref") and ``payload``: reused when its
    stats.json exists; else ``build(tmp, final)`` writes dataset/ and tokenizer/ into
    ``tmp`` and returns the stats, which are written last, and ``tmp`` becomes ``final``."""
    key = cache_key(payload)
    final = Path(cache_dir) / f"{kind}-{key}"
    if (final / "stats.json").exists():
        stats = json.loads((final / "stats.json").read_text())
        return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, True)
    tmp = Path(cache_dir) / f".{kind}-{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    stats = build(tmp, final)
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same key first; theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, False)
