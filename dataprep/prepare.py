"""The three preparations, each cached in one directory (dataprep/cache.py): pretraining data
(``data-<key>``), instruction data (``sft-<key>``) and preference pairs (``pref-<key>``).
Here is what each cache key holds; each pipeline (dataprep/pipelines/) is imported only on a
cache miss, so a hit starts neither Ray Data nor transformers. All three are kept under
``prepared_dir``: a path, or a prefix in an object store every node reaches."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dataprep.cache import PreparedData, prepare_cached
from dataprep.readers.documents import input_fingerprint
from dataprep.readers.files import file_stamps
from dataprep.readers.records import record_files
from rundir.node_cache import tree_entries
from rundir.store import Location, upload_tree
from schemas.data import DataConfig, PreferenceConfig, SFTConfig, TokenizerConfig

# Bump when the preparation code changes what it writes, to invalidate old caches.
# 4: the Ray Data pipeline and its Parquet shards; 5: relative sources; 6: the filtered
# corpus read back from Parquet (packing batches, hence the dropped tails, differ); 7: packing
# windows of the corpus's own rows and one shard file per window, whatever the read layout;
# 8: complete when its manifest is written (dataprep/cache.py)
PREPARE_VERSION = 8
# SFT and preference pairs; 2: SFT through the Ray Data pipeline; 3: a manifest
CHAT_PREPARE_VERSION = 3


def prepare_data(
    data: DataConfig,
    tokenizer_cfg: TokenizerConfig,
    seq_len: int,
    store: str,
    model_path: str | None = None,
    tokenizer_key: str | None = None,
    before_build: Callable[[], object] | None = None,
) -> PreparedData:
    """Pretraining shards, the tokenizer and the data report (pipelines/pretrain.py), kept
    under ``store``: a path, or an object-store URI every node reaches.
    ``tokenizer_key`` stands for a pretrained tokenizer's path in the cache key when what it
    tokenizes is known by content (evaluation: dataprep/tokens/fingerprint.py).
    ``before_build`` runs only when the cache misses, before the pipeline (`make prepare`
    starts Ray there: a cache hit needs none)."""
    tokenizer = dataclasses.asdict(tokenizer_cfg)
    source = tokenizer_cfg.name_or_path or model_path
    if tokenizer_key is not None:
        tokenizer["name_or_path"] = source = tokenizer_key
    payload = {
        "version": PREPARE_VERSION,
        # The memory budget and the small-corpus threshold change how fast the shards
        # come, not what they hold.
        "data": dataclasses.asdict(data)
        | {"object_store_mib_per_cpu": None, "small_corpus_mib": None},
        "tokenizer": tokenizer,
        "tokenizer_source": source,
        "seq_len": seq_len,
        "inputs": input_fingerprint(data),
    }

    def build(out: Location, final: Location) -> tuple[dict, dict]:
        from dataprep.pipelines.pretrain import prepare_shards

        if before_build is not None:
            before_build()
        started = time.perf_counter()
        stats, entries = prepare_shards(data, tokenizer_cfg, seq_len, out, model_path)
        stats["prepare_s"] = round(time.perf_counter() - started, 2)
        stats["data_report"] = final.child("data_report.json").uri
        return stats, entries

    return prepare_cached(store, "data", payload, build)


def prepare_sft_data(cfg: SFTConfig, tokenizer_path: str, seq_len: int, store: str) -> PreparedData:
    """Instruction data as packed rows, on the cluster (pipelines/sft.py): its tasks write
    the shards into the preparation wherever it is."""

    def build_splits(tokenizer, out: Location, staging: Path) -> tuple[dict, dict]:
        from dataprep.pipelines.sft import prepare_sft_shards

        return prepare_sft_shards(cfg, tokenizer, seq_len, out)

    return _prepare_chat_data("sft", cfg, tokenizer_path, seq_len, store, build_splits)


def prepare_preference_data(
    cfg: PreferenceConfig, tokenizer_path: str, seq_len: int, store: str
) -> PreparedData:
    """Preference pairs as chosen and rejected rows, in the driver (pipelines/preference.py),
    staged locally and uploaded with the tokenizer."""

    def build_splits(tokenizer, out: Location, staging: Path) -> tuple[dict, dict]:
        from dataprep.pipelines.preference import prepare_preference_splits

        return prepare_preference_splits(cfg, tokenizer, seq_len, staging), {}

    return _prepare_chat_data("pref", cfg, tokenizer_path, seq_len, store, build_splits)


def _prepare_chat_data(
    kind: str, cfg, tokenizer_path: str, seq_len: int, store: str, build_splits
) -> PreparedData:
    """Cached "train" and "validation" (the held-out test split) rows plus the tokenizer,
    with a chat template, that the export will carry. ``build_splits(tokenizer, out,
    staging)`` writes the dataset into ``out`` (its tasks; ``out/tokenizer`` is there first)
    or into the local ``staging`` folder (the driver; uploaded after) and returns each
    split's stats and the manifest entries of what it wrote into ``out``; ``kind`` names
    the cache entry ("sft", "pref") and the config section."""
    payload = {
        "version": CHAT_PREPARE_VERSION,
        kind: dataclasses.asdict(cfg),
        "seq_len": seq_len,
        "inputs": _chat_inputs(tokenizer_path, record_files(cfg, kind)),
    }

    def build(out: Location, final: Location) -> tuple[dict, dict]:
        from dataprep.tokens.chat import ensure_chat_template
        from dataprep.tokens.tokenizer import load_pretrained_tokenizer

        tokenizer = load_pretrained_tokenizer(tokenizer_path)
        added_template = ensure_chat_template(tokenizer)
        stats = {"chat_template": "default" if added_template else "tokenizer's own"}
        with tempfile.TemporaryDirectory(prefix=f"zeroray-{kind}-") as tmp:
            staging = Path(tmp)
            tokenizer.save_pretrained(str(staging / "tokenizer"))
            upload_tree(staging / "tokenizer", out.child("tokenizer").uri)  # for the tasks
            split_stats, entries = build_splits(tokenizer, out, staging)
            upload_tree(staging, out.uri)  # the tokenizer again (small) and staged data
            entries |= tree_entries(staging)
        stats |= split_stats
        stats["sequences"] = {name: stats[name]["rows"] for name in ("train", "validation")}
        stats["seq_len"] = seq_len
        return stats, entries

    return prepare_cached(store, kind, payload, build)


def _chat_inputs(tokenizer_path: str, data_files: list[Path]) -> list:
    tok = Path(tokenizer_path)
    tokenizer_files = sorted(p for p in tok.glob("*") if p.is_file()) if tok.is_dir() else []
    return [sys.version, tokenizer_path] + file_stamps(data_files + tokenizer_files)
