"""What the pretraining preparation did: per-batch summaries of the filter stage (counts and
length histograms, summed by the driver), the bad records with their locations, and
data_report.json and data_report.png beside the prepared shards: what every filter removed,
document lengths before and after, tokens per split, near-duplicate examples, and the removed
contaminated documents with the evaluation item each overlapped."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa

from console import log
from dataprep.bad_records import BadRecords
from dataprep.formatters.pii import PII_KINDS
from schemas.data import DataConfig
from schemas.fields import ConfigError


def length_bin(words: int) -> int:
    """Power-of-two bins of words per document: bin k holds [2^k, 2^(k+1))."""
    return int(math.log2(words)) if words > 0 else -1


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
        "bad_where": _first_bad(rows),
        "contaminated": [
            {"source": r["source"], **json.loads(r["eval_item"])}
            for r in rows
            if r["drop"] == "contaminated"
        ],
    }
    return pa.table({"summary": [json.dumps(summary)]})


def _first_bad(rows: list[dict]) -> list[list[str]]:
    """[reason, location] of the first BadRecords.SHOW bad records of each reason: all the
    report keeps, so the merged summaries hold the same ones however the batches fell."""
    shown: Counter = Counter()
    first = []
    for r in rows:
        reason = r["drop"][4:] if r["drop"].startswith("bad:") else ""
        if reason and shown[reason] < BadRecords.SHOW:
            shown[reason] += 1
            first.append([reason, r["where"]])
    return first


def merge_summaries(summaries: list[dict]) -> dict:
    """The per-batch summaries of ``summarize``, summed (in batch order)."""
    total = {key: Counter() for key in ("drops", "splits", "pii", "read_bins", "kept_bins")}
    bad_where, contaminated = [], []
    for summary in summaries:
        for key, counter in total.items():
            counter.update(summary[key])
        bad_where += summary["bad_where"]
        contaminated += summary["contaminated"]
    return total | {"bad_where": bad_where, "contaminated": contaminated}


def bad_records(merged: dict) -> BadRecords:
    """The unreadable records of the whole corpus: counts by reason, first locations."""
    bad = BadRecords()
    for reason, where in merged["bad_where"]:
        bad.add(reason, where)
    bad.counts.clear()
    for key, count in merged["drops"].items():
        if key.startswith("bad:"):
            bad.counts[key[4:]] = count
    bad.seen = sum(merged["drops"].values())
    return bad


def check_read(merged: dict, data: DataConfig) -> None:
    """Too many unreadable records, or no document left: a one-line error."""
    bad = bad_records(merged)
    if bad.counts:
        log.info(f"data: skipped {sum(bad.counts.values())} bad records: {bad.describe()}")
    bad.check(data.max_bad_fraction, "input", "data.max_bad_fraction")
    if not merged["drops"].get("kept"):
        raise ConfigError(
            f"data: the corpus is empty after cleaning ({dict(merged['drops'])}); "
            f"allowed: sources with documents of at least data.min_chars={data.min_chars} "
            "characters that pass data.quality"
        )


def build_report(merged: dict, dedup: dict, tokens: dict, eval_items: int) -> dict:
    drops = Counter(merged["drops"])
    passed = drops.pop("kept", 0)
    removed = {k: v for k, v in sorted(drops.items()) if not k.startswith("bad:")}
    removed["duplicate"] = len(dedup["exact"])
    removed["near_duplicate"] = len(dedup["near"])
    bins = {
        stage: {
            f"{2 ** int(b)}-{2 ** (int(b) + 1) - 1}": n
            for b, n in sorted(merged[f"{stage}_bins"].items(), key=lambda kv: int(kv[0]))
            if int(b) >= 0
        }
        for stage in ("read", "kept")
    }
    return {
        "documents_read": sum(v for k, v in merged["drops"].items() if not k.startswith("bad:")),
        "documents_kept": passed - len(dedup["exact"]) - len(dedup["near"]),
        "bad_records": {k[4:]: v for k, v in drops.items() if k.startswith("bad:")},
        "removed": removed,
        "pii_masked": {k: v for k, v in merged["pii"].items() if v},
        # Kept lengths are counted before deduplication (a histogram of what passed filters).
        "length_bins_words": bins,
        "tokens": tokens,
        "near_duplicate_examples": [
            {"removed": k, "kept": v} for k, v in sorted(dedup["near"].items())[:50]
        ],
        "contaminated": merged["contaminated"],
        "eval_items": eval_items,
    }


def write_report(report: dict, directory: Path) -> Path:
    path = directory / "data_report.json"
    path.write_text(json.dumps(report, indent=1))
    _plot(report, directory / "data_report.png")
    return path


def _plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    lengths = report["length_bins_words"]
    bins = sorted(set(lengths["read"]) | set(lengths["kept"]), key=lambda b: int(b.split("-")[0]))
    for stage, offset in (("read", -0.2), ("kept", 0.2)):
        values = [lengths[stage].get(b, 0) for b in bins]
        axes[0].bar([i + offset for i in range(len(bins))], values, width=0.4, label=stage)
    axes[0].set_xticks(range(len(bins)), bins, rotation=60, fontsize=7)
    axes[0].set_xlabel("words per document")
    axes[0].set_ylabel("documents")
    axes[0].legend()
    removed = report["removed"]
    axes[1].barh(list(removed), list(removed.values()))
    axes[1].set_xlabel("documents removed")
    axes[1].tick_params(axis="y", labelsize=7)
    tokens = report["tokens"]
    axes[2].bar(list(tokens), list(tokens.values()))
    axes[2].set_ylabel("tokens")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def report_table(report: dict) -> str:
    """A few lines for the console (the logger prefixes each)."""
    removed = ", ".join(f"{k} {v}" for k, v in report["removed"].items() if v) or "none"
    masked = ", ".join(f"{k} {v}" for k, v in report["pii_masked"].items()) or "none"
    tokens = ", ".join(f"{k} {v:,}" for k, v in report["tokens"].items())
    stages = ", ".join(f"{k} {v} s" for k, v in report.get("stage_seconds", {}).items())
    return (
        f"data: {report['documents_read']} documents read, "
        f"{report['documents_kept']} kept; removed {removed}\n"
        f"data: PII masked {masked}; tokens {tokens}"
        + (f"\ndata: wall time by stage: {stages}" if stages else "")
    )
