"""The per-batch work of the pipeline, each a plain function Ray Data runs in its tasks:
filter (clean, PII, quality rules, split, decontamination), summarize (counts and length
histograms per batch, summed by the driver), MinHash band keys, tokenize and pack."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from itertools import chain

import numpy as np
import pyarrow as pa

from dataprep.cleaning import clean_text
from dataprep.filtering.decontam import EvalOverlap
from dataprep.filtering.near_dup import band_buckets, signature
from dataprep.filtering.pii import mask_pii
from dataprep.filtering.quality import quality_failure
from dataprep.filtering.report import length_bin
from dataprep.records import is_validation_source
from schemas.data import DataConfig

PII_KINDS = ("email", "ip", "phone")


def filter_documents(batch: pa.Table, cfg: DataConfig, overlap: EvalOverlap | None) -> pa.Table:
    """Every document with why it is dropped ("" = kept): bad record, empty, short,
    quality_<rule> or contaminated; kept texts cleaned and masked, with their digest."""
    out: dict[str, list] = {
        k: []
        for k in ("key", "source", "split", "text", "drop", "where", "words", "digest", "eval_item")
    }
    pii = {kind: [] for kind in PII_KINDS}
    for row in batch.to_pylist():
        counts: Counter = Counter()
        text, drop, item = "", row["bad"] and f"bad:{row['bad']}", ""
        words = 0
        split = (
            "validation"
            if is_validation_source(row["source"], cfg.validation_fraction)
            else "train"
        )
        if not drop:
            text = clean_text(row["text"])
            words = len(text.split())
            drop = _drop_reason(text, cfg, counts)
            if not drop:
                text = mask_pii(text, counts) if cfg.pii else text
                failure = quality_failure(text, cfg.quality)
                drop = f"quality_{failure}" if failure else ""
            if not drop and split == "train" and overlap is not None:
                hit = overlap.match(text)
                if hit:
                    drop, item = "contaminated", json.dumps({"eval_item": hit[0], "ngram": hit[1]})
        kept = not drop
        for key, value in (
            ("key", row["key"]),
            ("source", row["source"]),
            ("split", split),
            ("text", text if kept else ""),
            ("drop", drop),
            ("where", row["where"]),
            ("words", words),
            ("digest", hashlib.blake2b(text.encode(), digest_size=16).hexdigest() if kept else ""),
            ("eval_item", item),
        ):
            out[key].append(value)
        for kind in PII_KINDS:
            pii[kind].append(counts[f"pii_{kind}"])
    return pa.table(out | {f"pii_{k}": v for k, v in pii.items()})


def _drop_reason(text: str, cfg: DataConfig, counts: Counter) -> str:
    if not text:
        return "empty"
    if len(text) < cfg.min_chars:
        return "short"
    return ""


def summarize(batch: pa.Table) -> pa.Table:
    """One row per batch: documents per outcome, PII masks, length histograms (read and
    kept), the first locations of bad records and the contaminated documents."""
    rows = batch.to_pylist()
    drops = Counter(r["drop"] or "kept" for r in rows)
    splits = Counter(r["split"] for r in rows if not r["drop"])
    read_bins = Counter(length_bin(r["words"]) for r in rows if not r["drop"].startswith("bad:"))
    kept_bins = Counter(length_bin(r["words"]) for r in rows if not r["drop"])
    summary = {
        "drops": drops,
        "splits": splits,
        "pii": {k: sum(r[f"pii_{k}"] for r in rows) for k in PII_KINDS},
        "read_bins": read_bins,
        "kept_bins": kept_bins,
        "bad_where": [[r["drop"][4:], r["where"]] for r in rows if r["drop"].startswith("bad:")][
            :20
        ],
        "contaminated": [
            {"source": r["source"], **json.loads(r["eval_item"])}
            for r in rows
            if r["drop"] == "contaminated"
        ],
    }
    return pa.table({"summary": [json.dumps(summary)]})


def band_rows(
    batch: pa.Table, threshold: float, num_perm: int, bands: int | None, size: int
) -> pa.Table:
    """(key, band, bucket) for every LSH band of every document's MinHash signature."""
    keys, band_ids, buckets = [], [], []
    for key, text in zip(batch.column("key").to_pylist(), batch.column("text").to_pylist()):
        for band, bucket in enumerate(band_buckets(text, threshold, num_perm, bands, size)):
            keys.append(key)
            band_ids.append(band)
            buckets.append(bucket)
    return pa.table({"key": keys, "band": band_ids, "bucket": buckets})


def signature_rows(batch: pa.Table, num_perm: int, size: int) -> pa.Table:
    """(key, signature) of each document: the full MinHash values, to check a candidate."""
    texts = batch.column("text").to_pylist()
    sigs = [signature(t, num_perm, size).tolist() for t in texts]
    return pa.table(
        {"key": batch.column("key"), "signature": pa.array(sigs, pa.list_(pa.uint64()))}
    )


def group_edges(group: pa.Table) -> pa.Table:
    """The documents sharing a digest (or an LSH bucket): each but the first in corpus order,
    linked to that first one."""
    keys = sorted(group.column("key").to_pylist())
    return pa.table({"first": [keys[0]] * (len(keys) - 1), "other": keys[1:]})


_TOKENIZERS: dict = {}


def tokenize_and_pack(batch: pa.Table, tokenizer_dir: str, seq_len: int) -> pa.Table:
    """Each document followed by EOS, concatenated, cut into seq_len rows; the tail of the
    batch shorter than a row is dropped (at most seq_len - 1 tokens per batch)."""
    from transformers import AutoTokenizer

    if tokenizer_dir not in _TOKENIZERS:  # once per worker process
        _TOKENIZERS[tokenizer_dir] = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer = _TOKENIZERS[tokenizer_dir]
    texts = batch.column("text").to_pylist()
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    eos = tokenizer.eos_token_id
    stream = np.fromiter(chain.from_iterable(r + [eos] for r in ids), dtype=np.int64)
    usable = len(stream) - len(stream) % seq_len
    rows = stream[:usable].reshape(-1, seq_len)
    return pa.table({"input_ids": pa.array(list(rows), type=pa.list_(pa.int64()))})


def split_by_document(batch: pa.Table, fraction: float) -> pa.Table:
    """Too few sources to split by source (one file, say): hold out documents instead."""
    keys = batch.column("key").to_pylist()
    split = ["validation" if is_validation_source(k, fraction) else "train" for k in keys]
    return batch.set_column(batch.schema.get_field_index("split"), "split", pa.array(split))
