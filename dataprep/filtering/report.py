"""data_report.json and data_report.png beside the prepared shards: what every filter
removed, document lengths before and after, tokens per split, and the removed
contaminated documents with the evaluation item each overlapped."""

from __future__ import annotations

import json
from pathlib import Path

from dataprep.filtering.corpus_filter import CorpusFilter


def build_report(filters: CorpusFilter, stats: dict) -> dict:
    counts = dict(filters.counts)
    return {
        "documents_read": counts.get("read", 0),
        "documents_kept": counts.get("kept", 0),
        "removed": {k[len("dropped_") :]: v for k, v in counts.items() if k.startswith("dropped_")},
        "pii_masked": {k[len("pii_") :]: v for k, v in counts.items() if k.startswith("pii_")},
        "length_bins_words": {
            stage: {f"{2**b}-{2 ** (b + 1) - 1}": n for b, n in sorted(bins.items()) if b >= 0}
            for stage, bins in filters.lengths.items()
        },
        "tokens": stats["tokens"],
        "near_duplicate_examples": filters.near.pairs if filters.near else [],
        "contaminated": filters.contaminated,
        "eval_items": filters.overlap.items if filters.overlap else 0,
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
    bins = sorted(
        set(report["length_bins_words"]["read"]) | set(report["length_bins_words"]["kept"]),
        key=lambda label: int(label.split("-")[0]),
    )
    for stage, offset in (("read", -0.2), ("kept", 0.2)):
        values = [report["length_bins_words"][stage].get(b, 0) for b in bins]
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
    """A few lines for the console."""
    removed = ", ".join(f"{k} {v}" for k, v in report["removed"].items()) or "none"
    masked = ", ".join(f"{k} {v}" for k, v in report["pii_masked"].items()) or "none"
    return (
        f"[zeroray] data: {report['documents_read']} documents read, "
        f"{report['documents_kept']} kept\n"
        f"[zeroray] data: removed {removed}\n"
        f"[zeroray] data: PII masked {masked}; tokens "
        + ", ".join(f"{k} {v:,}" for k, v in report["tokens"].items())
    )
