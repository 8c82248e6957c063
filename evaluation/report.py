"""The printed comparison: a metrics table with one column per export, then samples."""

from __future__ import annotations

METRICS = (
    ("text", "perplexity", "held-out text perplexity", "{:.1f}"),
    ("text", "loss", "held-out text loss", "{:.3f}"),
    ("qa", "exact_match", "QA exact match (%)", "{:.1f}"),
    ("qa", "f1", "QA token F1 (%)", "{:.1f}"),
    ("translation", "bleu", "BLEU", "{:.2f}"),
    ("translation", "chrf", "chrF", "{:.2f}"),
    ("summarization", "rouge1", "ROUGE-1", "{:.2f}"),
    ("summarization", "rouge2", "ROUGE-2", "{:.2f}"),
    ("summarization", "rougeL", "ROUGE-L", "{:.2f}"),
)


def format_reports(reports: list[dict], names: list[str]) -> str:
    """A metrics table with one column per export, then each export's sample answers."""
    width = max(len(n) for n in names) + 2
    rows = []
    for section, key, label, fmt in METRICS:
        if all(section in r for r in reports):
            rows.append((label, [fmt.format(r[section][key]) for r in reports]))
    rows += _lm_eval_rows(reports)
    label_width = max([28] + [len(label) + 2 for label, _ in rows])
    lines = ["metric".ljust(label_width) + "".join(n.rjust(width) for n in names)]
    lines += [
        label.ljust(label_width) + "".join(c.rjust(width) for c in cells) for label, cells in rows
    ]
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


def _lm_eval_rows(reports: list[dict]) -> list[tuple[str, list[str]]]:
    """One row per lm-eval task and metric that every report has."""
    if not all("lm_eval" in r for r in reports):
        return []
    rows = []
    for task, metrics in reports[0]["lm_eval"].items():
        for metric in metrics:
            if metric == "documents" or not all(
                metric in r["lm_eval"].get(task, {}) for r in reports
            ):
                continue
            cells = [f"{r['lm_eval'][task][metric]:.4g}" for r in reports]
            rows.append((f"lm-eval {task.removeprefix('zeroray_')} {metric}", cells))
    return rows


def _clip(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
