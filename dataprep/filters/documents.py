"""The filter stage of the pretraining pipeline, run by Ray Data on each batch of read
documents: every document gets its side of the split and a verdict, why it is dropped ("" =
kept). In order: a record the reader could not read (bad:<reason>); cleaned
(formatters/clean.py), then empty or short; PII masked (formatters/pii.py); a quality rule
broken (quality_<rule>, filters/quality.py); a training document sharing an n-gram with an
evaluation item (contaminated, filters/decontam.py). Kept texts carry their digest for exact
deduplication. Every later stage selects its rows with ``kept_rows``."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from dataprep.filters.decontam import EvalOverlap
from dataprep.filters.quality import quality_failure
from dataprep.formatters.clean import clean_text
from dataprep.formatters.pii import PII_KINDS, mask_pii
from dataprep.held_out import is_held_out
from dataprep.memory import hands_back_memory
from schemas.data import DataConfig

# Every output's types spelled out: an empty batch would otherwise give null-typed columns,
# and Ray Data cannot concatenate blocks of different schemas.
_S, _I = pa.string(), pa.int64()
MARKED = pa.schema(
    [(k, _S) for k in ("key", "source", "split", "text", "drop", "where")]
    + [("words", _I), ("digest", _S), ("eval_item", _S)]
    + [(f"pii_{k}", _I) for k in PII_KINDS]
)


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
            drop = _length_failure(text, cfg.min_chars)
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


def _length_failure(text: str, min_chars: int) -> str:
    if not text:
        return "empty"
    if len(text) < min_chars:
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


def split_by_document(batch: pa.Table, fraction: float) -> pa.Table:
    """Too few sources to split by source (one file, say): hold out documents instead."""
    keys = batch.column("key").to_pylist()
    split = ["validation" if is_held_out(k, fraction) else "train" for k in keys]
    return batch.set_column(batch.schema.get_field_index("split"), "split", pa.array(split))
