"""Pretraining data preparation, cached (dataprep/cache.py): the Ray Data pipeline of
dataprep/pipeline/ (read, clean and filter, deduplicate, decontaminate, train the tokenizer,
tokenize and pack into Parquet shards), with a data report beside the result."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from dataprep.cache import PreparedData, prepare_cached
from dataprep.readers.documents import input_fingerprint
from schemas.data import DataConfig, TokenizerConfig

# Bump when the preparation code changes what it writes, to invalidate old caches.
# 4: the Ray Data pipeline and its Parquet shards; 5: relative sources; 6: the filtered
# corpus read back from Parquet (packing batches, hence the dropped tails, differ)
PREPARE_VERSION = 6


def prepare_data(
    data: DataConfig,
    tokenizer_cfg: TokenizerConfig,
    seq_len: int,
    cache_dir: str,
    model_path: str | None = None,
) -> PreparedData:
    payload = {
        "version": PREPARE_VERSION,
        # The memory budget changes how fast the shards come, not what they hold.
        "data": dataclasses.asdict(data) | {"object_store_mib_per_cpu": None},
        "tokenizer": dataclasses.asdict(tokenizer_cfg),
        "tokenizer_source": tokenizer_cfg.name_or_path or model_path,
        "seq_len": seq_len,
        "inputs": input_fingerprint(data),
    }

    def build(tmp: Path, final: Path) -> dict:
        from dataprep.pipeline.run import prepare_shards  # Ray Data: only on a cache miss

        started = time.perf_counter()
        stats = prepare_shards(data, tokenizer_cfg, seq_len, tmp, model_path)
        stats["prepare_s"] = round(time.perf_counter() - started, 2)
        stats["data_report"] = str(final / "data_report.json")
        return stats

    return prepare_cached(cache_dir, "data", payload, build)
