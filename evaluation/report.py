"""The printed comparison: a metrics table with one column per export, then samples."""

from __future__ import annotations

METRICS = (
    ("text", "perplexity", "held-out text perplexity", "{:.1f}"),
    ("text", "loss", "held-out text loss", "{:.3f}"),
    ("qa", "exact_match", "QA exact match (%)", "{:.1f}"),
    ("qa", "f1", "QA token F1 (%)", "{:.1f}"),
    ("translation", "bleu", "BLEU", "{:.2f}"),
    ("translation", "chrf", "chrF", "{:.2f}"),
)


def format_reports(reports: list[dict], names: list[str]) -> str:
    """A metrics table with one column per export, then each export's sample answers."""
    width = max(len(n) for n in names) + 2
    lines = ["metric".ljust(28) + "".join(n.rjust(width) for n in names)]
    for section, key, label, fmt in METRICS:
        if all(section in r for r in reports):
            cells = [fmt.format(r[section][key]).rjust(width) for r in reports]
            lines.append(label.ljust(28) + "".join(cells))
    for name, report in zip(names, reports):
        if report["samples"]:
            lines.append(f"\nsamples ({name}):")
        for s in report["samples"]:
            lines += [
                f"  [{s['task']}] {_clip(s['prompt'])}",
                f"    reference: {_clip(s['reference'])}",
                f"    output:    {_clip(s['output'])}",
            ]
    return "\n".join(lines)


def _clip(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
