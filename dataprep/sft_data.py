"""Instruction data for fine-tuning: read -> chat messages -> tokens with labels -> rows.

Records come from JSONL or Parquet files, a `datasets` source, or the embedded stdlib QA set
(dataprep/readers/records.py), in any of the formats of dataprep/readers/chat_formats.py.
Each becomes token ids whose labels are -100 everywhere except on assistant tokens, so the
loss is taken on the responses only. Rows are `seq_len` long: one example each, or (packing)
several, each with position ids restarting at 0, which is what transformers reads to keep the
examples' attention apart (a block-diagonal causal mask). Bad records are skipped and
counted. The preparation runs on the cluster as a Ray Data pipeline
(dataprep/pipeline/sft_run.py) built of this module's pieces; its splits are cached like
pretraining data.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import datasets
import numpy as np

from dataprep.cache import PreparedData, prepare_cached
from dataprep.chat_template import ensure_chat_template, tokenize_chat
from dataprep.readers.records import record_files
from dataprep.tokenizer import load_pretrained_tokenizer
from schemas.data import SFTConfig

PREPARE_VERSION = 2  # 2: SFT through the Ray Data pipeline
IGNORE_INDEX = -100  # label of tokens that take no part in the loss (PyTorch's default)


# --- tokens, labels, rows ------------------------------------------------------------------


def encode_example(
    tokenizer, messages: list[dict], seq_len: int, truncation: str, trained_from: int = 0
):
    """(input_ids, labels) of one conversation, or the reason it is dropped; labels only on
    the assistant turns from message ``trained_from`` on."""
    ids, trained = tokenize_chat(tokenizer, messages, trained_from)
    if len(ids) > seq_len:
        if truncation == "drop":
            return "too_long"
        keep = slice(-seq_len, None) if truncation == "left" else slice(0, seq_len)
        ids, trained = ids[keep], trained[keep]
    labels = [t if flag else IGNORE_INDEX for t, flag in zip(ids, trained)]
    labels[0] = IGNORE_INDEX  # nothing precedes it in this example: never a target
    if all(label == IGNORE_INDEX for label in labels):
        return "no_response_tokens"
    return ids, labels


def build_rows(examples: list[tuple[list, list]], seq_len: int, pad_id: int, packing: bool):
    """Fixed-length rows of input_ids, labels and position_ids (int64 arrays). Packing fills
    each row greedily in order; padding at a row's end has label -100 and, coming after
    every real token, is never attended to by them."""
    rows: list[tuple[list, list, list]] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for ex_ids, ex_labels in examples:
        if ids and (not packing or len(ids) + len(ex_ids) > seq_len):
            rows.append((ids, labels, positions))
            ids, labels, positions = [], [], []
        ids += ex_ids
        labels += ex_labels
        positions += range(len(ex_ids))  # restarts at 0: a new example begins here
    if ids:
        rows.append((ids, labels, positions))
    out = {
        k: np.full((len(rows), seq_len), v, dtype=np.int64)
        for k, v in (("input_ids", pad_id), ("labels", IGNORE_INDEX), ("position_ids", 0))
    }
    for r, (row_ids, row_labels, row_pos) in enumerate(rows):
        n = len(row_ids)
        out["input_ids"][r, :n] = row_ids
        out["labels"][r, :n] = row_labels
        # Pads continue the last example's positions, so they read as part of it.
        out["position_ids"][r] = row_pos + list(
            range(row_pos[-1] + 1, row_pos[-1] + 1 + seq_len - n)
        )
    return out


# --- cached preparation --------------------------------------------------------------------


def _fingerprint(tokenizer_path: str, data_files: list[Path]) -> list:
    tok = Path(tokenizer_path)
    files = data_files + (sorted(p for p in tok.glob("*") if p.is_file()) if tok.is_dir() else [])
    return [sys.version, tokenizer_path] + [
        (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    ]


def prepare_chat_data(
    kind: str, cfg, tokenizer_path: str, seq_len: int, cache_dir: str, build
) -> PreparedData:
    """Cached "train" and "validation" (the held-out test split) rows plus the tokenizer, with
    a chat template, that the export will carry. ``build(tokenizer, out)`` writes
    ``out/dataset`` (``out/tokenizer`` is saved first) and returns each split's stats;
    ``kind`` names the cache entry ("sft", "pref") and the config section."""
    payload = {
        "version": PREPARE_VERSION,
        kind: dataclasses.asdict(cfg),
        "seq_len": seq_len,
        "inputs": _fingerprint(tokenizer_path, record_files(cfg, kind)),
    }

    def build_dir(tmp: Path, final: Path) -> dict:
        tokenizer = load_pretrained_tokenizer(tokenizer_path)
        added_template = ensure_chat_template(tokenizer)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        stats = {"chat_template": "default" if added_template else "tokenizer's own"}
        stats |= build(tokenizer, tmp)
        stats["sequences"] = {name: stats[name]["rows"] for name in ("train", "validation")}
        stats["seq_len"] = seq_len
        return stats

    return prepare_cached(cache_dir, kind, payload, build_dir)


def save_in_driver(encode):
    """A ``build`` for prepare_chat_data that encodes each split in this process with
    ``encode(tokenizer, split)`` -> (rows, stats) and saves them as a DatasetDict."""

    def build(tokenizer, out: Path) -> dict:
        splits, stats = {}, {}
        for split, name in (("train", "train"), ("test", "validation")):
            rows, stats[name] = encode(tokenizer, split)
            splits[name] = datasets.Dataset.from_dict(rows)
        datasets.DatasetDict(splits).save_to_disk(str(out / "dataset"))
        return stats

    return build


def prepare_sft_data(
    cfg: SFTConfig, tokenizer_path: str, seq_len: int, cache_dir: str
) -> PreparedData:
    """Through the Ray Data pipeline (dataprep/pipeline/sft_run.py), on the cluster."""
    from dataprep.pipeline.sft_run import prepare_sft_shards  # imports this module

    return prepare_chat_data(
        "sft",
        cfg,
        tokenizer_path,
        seq_len,
        cache_dir,
        lambda tokenizer, out: prepare_sft_shards(cfg, tokenizer, seq_len, out),
    )
