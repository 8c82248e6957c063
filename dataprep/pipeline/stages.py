"""The per-batch work of the pipeline, each a plain function Ray Data runs in its tasks:
filter (clean, PII, quality rules, split, decontamination), summarize (counts and length
histograms per batch, summed by the driver), MinHash band keys, tokenize and pack."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from dataprep.cleaning import clean_text
from dataprep.filtering.decontam import EvalOverlap
from dataprep.filtering.near_dup import band_buckets, signatures
from dataprep.filtering.pii import mask_pii
from dataprep.filtering.quality import quality_failure
from dataprep.filtering.report import length_bin
from dataprep.held_out import is_held_out
from dataprep.packing import pack_documents
from dataprep.pipeline.encoder import batch_encoder
from dataprep.pipeline.memory import hands_back_memory
from schemas.data import DataConfig

PII_KINDS = ("email", "ip", "phone")
# Every output's types spelled out: an empty batch would otherwise give null-typed columns,
# and Ray Data cannot concatenate blocks of different schemas.
_S, _I = pa.string(), pa.int64()
MARKED = pa.schema(
    [(k, _S) for k in ("key", "source", "split", "text", "drop", "where")]
    + [("words", _I), ("digest", _S), ("eval_item", _S)]
    + [(f"pii_{k}", _I) for k in PII_KINDS]
)
# ~33 bytes a row (documents x 14 bands by default: the largest shuffle of the pipeline)
BANDS = pa.schema([("key", _S), ("bucket", pa.uint64()), ("part", pa.int32())])
DIGESTS = pa.schema([("key", _S), ("digest", _S), ("part", _I)])
EDGES = pa.schema([("first", _S), ("other", _S)])
SIGNATURES = pa.schema([("key", _S), ("signature", pa.list_(pa.uint64()))])
PACKED = pa.schema([("input_ids", pa.list_(pa.int64()))])


@hands_back_memory
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
        split = "validation" if is_held_out(row["source"], cfg.validation_fraction) else "train"
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
    return pa.table(out | {f"pii_{k}": v for k, v in pii.items()}, schema=MARKED)


def _drop_reason(text: str, cfg: DataConfig, counts: Counter) -> str:
    if not text:
        return "empty"
    if len(text) < cfg.min_chars:
        return "short"
    return ""


def kept_rows(batch: pa.Table, split: str | None = None, gone=frozenset()) -> pa.Table:
    """The documents that passed the filters (of one split, without the keys in ``gone``).
    Every stage after the filter stage selects its rows with this itself rather than
    reading a filtered dataset: Ray Data passes a block that a filter empties on without
    its schema, and the shuffles and writes after it cannot concatenate it with others."""
    keep = pc.equal(batch.column("drop"), "")
    if split is not None:
        keep = pc.and_(keep, pc.equal(batch.column("split"), split))
    if gone:
        keep = pc.and_(keep, pc.invert(pc.is_in(batch.column("key"), pa.array(sorted(gone)))))
    return batch.filter(keep)


def _part(hex_digest: str, partitions: int) -> int:
    """The shuffle partition of a group key: its (already uniform) digest's first bits."""
    return int(hex_digest[:8], 16) % partitions


def digest_rows(batch: pa.Table, partitions: int) -> pa.Table:
    """(key, digest, part) of the kept documents: what exact deduplication groups on."""
    batch = kept_rows(batch)
    digests = batch.column("digest").to_pylist()
    parts = [_part(d, partitions) for d in digests]
    return pa.table({"key": batch.column("key"), "digest": digests, "part": parts}, schema=DIGESTS)


def summarize(batch: pa.Table) -> pa.Table:
    """One row per batch: documents per outcome, PII masks, length histograms (read and
    kept), the first locations of bad records and the contaminated documents."""
    # The texts are not counted: read without them, or dropped here without a copy.
    rows = batch.drop_columns([c for c in ("text",) if c in batch.column_names]).to_pylist()
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


@hands_back_memory
def band_rows(
    batch: pa.Table,
    threshold: float,
    num_perm: int,
    bands: int | None,
    size: int,
    skip: set,
    partitions: int,
) -> pa.Table:
    """(key, bucket, part) for every LSH band of every document's MinHash signature; the
    dropped documents and the keys in ``skip`` (exact duplicates) left out."""
    batch = kept_rows(batch, gone=skip)
    keys, buckets = [], []
    texts = batch.column("text").to_pylist()
    for key, values in zip(batch.column("key").to_pylist(), signatures(texts, num_perm, size)):
        for bucket in band_buckets(values, threshold, num_perm, bands):
            keys.append(key)
            buckets.append(bucket)
    parts = [bucket % partitions for bucket in buckets]
    return pa.table({"key": keys, "bucket": buckets, "part": parts}, schema=BANDS)


def signature_rows(batch: pa.Table, num_perm: int, size: int, only: set) -> pa.Table:
    """(key, signature) of the documents in ``only``: the full MinHash values, to check the
    candidates."""
    rows = [
        (k, t)
        for k, t in zip(batch.column("key").to_pylist(), batch.column("text").to_pylist())
        if k in only
    ]
    sigs = [s.tolist() for s in signatures((t for _, t in rows), num_perm, size)]
    return pa.table({"key": [k for k, _ in rows], "signature": sigs}, schema=SIGNATURES)


@hands_back_memory
def group_edges(part: pa.Table, group_keys: list[str]) -> pa.Table:
    """Within one shuffle partition: the documents sharing ``group_keys`` (a digest, or an LSH
    band's bucket), each but the first in corpus order linked to that first one. Arrow's
    own group-by and join: a partition holds ~a million groups, most of one document."""
    firsts = part.group_by(group_keys).aggregate([("key", "min"), ("key", "count")])
    firsts = firsts.filter(pc.greater(firsts.column("key_count"), 1))
    pairs = part.select([*group_keys, "key"]).join(firsts, group_keys)
    others = pairs.filter(pc.not_equal(pairs.column("key"), pairs.column("key_min")))
    return pa.table(
        {"first": others.column("key_min"), "other": others.column("key")}, schema=EDGES
    )


ENCODE_SLICE_DOCS = 1024  # documents encoded at once (on all threads): bounded memory


@hands_back_memory
def tokenize_and_pack(
    batch: pa.Table, tokenizer_dir: str, seq_len: int, split: str | None = None, gone=frozenset()
) -> pa.Table:
    """The kept documents of ``split`` (not in ``gone``) tokenized and packed into rows."""
    encode, eos = batch_encoder(tokenizer_dir)
    if "drop" in batch.column_names:
        batch = kept_rows(batch, split, gone)
    texts = batch.column("text").to_pylist()

    # Slices consumed as packing reads them: only one slice's ids are Python lists at a
    # time (8,192 documents' at once took ~700 MB per task on the bench corpus, measured).
    def ids():
        for start in range(0, len(texts), ENCODE_SLICE_DOCS):
            yield from encode(texts[start : start + ENCODE_SLICE_DOCS])

    flat = pack_documents(ids(), eos, seq_len).reshape(-1)
    # One list per row over the flat ids without copying them: a list of NumPy rows went
    # through Arrow's per-row conversion (~100 MB more per task, measured).
    offsets = pa.array(range(0, len(flat) + 1, seq_len), pa.int32())
    return pa.table({"input_ids": pa.ListArray.from_arrays(offsets, flat)}, schema=PACKED)


def split_by_document(batch: pa.Table, fraction: float) -> pa.Table:
    """Too few sources to split by source (one file, say): hold out documents instead."""
    keys = batch.column("key").to_pylist()
    split = ["validation" if is_held_out(k, fraction) else "train" for k in keys]
    return batch.set_column(batch.schema.get_field_index("split"), "split", pa.array(split))
