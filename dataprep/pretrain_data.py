"""Pretraining data preparation, cached: the Ray Data pipeline of dataprep/pipeline/ (read,
clean and filter, deduplicate, decontaminate, train the tokenizer, tokenize and pack into
Parquet shards), with a data report beside the result.

The result is a directory keyed by a hash of every input and setting, written under a
temporary name and renamed when complete, so a second run with the same inputs skips all
of it and a crashed run never leaves a half-written cache behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dataprep.readers.documents import input_fingerprint
from schemas.data import DataConfig, TokenizerConfig

# Bump when the preparation code changes what it writes, to invalidate old caches.
# 4: the Ray Data pipeline and its Parquet shards; 5: relative sources; 6: the filtered
# corpus read back from Parquet (packing batches, hence the dropped tails, differ)
PREPARE_VERSION = 6


@dataclass
class PreparedData:
    dataset_dir: str  # train/ and validation/ Parquet shards (or a DatasetDict), input_ids
    tokenizer_dir: str
    stats: dict
    cache_hit: bool


def cache_key(
    data: DataConfig, tokenizer: TokenizerConfig, seq_len: int, model_path: str | None
) -> str:
    payload = {
        "version": PREPARE_VERSION,
        # The memory budget changes how fast the shards come, not what they hold.
        "data": dataclasses.asdict(data) | {"object_store_mib_per_cpu": None},
        "tokenizer": dataclasses.asdict(tokenizer),
        "tokenizer_source": tokenizer.name_or_path or model_path,
        "seq_len": seq_len,
        "inputs": input_fingerprint(data),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def prepare_data(
    data: DataConfig,
    tokenizer_cfg: TokenizerConfig,
    seq_len: int,
    cache_dir: str,
    model_path: str | None = None,
) -> PreparedData:
    key = cache_key(data, tokenizer_cfg, seq_len, model_path)
    final = Path(cache_dir) / f"data-{key}"
    if (final / "stats.json").exists():
        stats = json.loads((final / "stats.json").read_text())
        return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, True)

    from dataprep.pipeline.run import prepare_shards  # Ray Data: only on a cache miss

    started = time.perf_counter()
    tmp = Path(cache_dir) / f".data-{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    stats = prepare_shards(data, tokenizer_cfg, seq_len, tmp, model_path)
    stats["prepare_s"] = round(time.perf_counter() - started, 2)
    stats["data_report"] = str(final / "data_report.json")
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same key first; theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, False)
