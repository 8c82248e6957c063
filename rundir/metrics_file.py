"""metrics.jsonl: one JSON record per logged step, appended by rank 0 (trainer/metrics.py
MetricsWriter), read by the driver's summary, the loss picture, resume and the tests."""

from __future__ import annotations

import json
from pathlib import Path


def metrics_line(step: int, metrics: dict) -> str:
    return json.dumps({"step": step, **metrics}) + "\n"


def read_metrics(path: str | Path) -> list[dict]:
    """Every complete record. A last line cut short (a crash or a full disk mid-write) is
    skipped, so a restart that reads the file still works; a bad line before it is an error."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    if lines:
        try:
            records.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            pass
    return records


def copy_until(source: str | Path, target: str | Path, step: int) -> None:
    """Writes ``target`` (``source`` itself, or a new run's file) with the records of
    ``source`` up to ``step``, none when ``step`` is 0 (no checkpoint to go back to): a
    restarted group redoes the steps after its checkpoint, a resumed run carries the history
    it continues."""
    kept = [r for r in read_metrics(source) if r["step"] <= step and step]
    Path(target).write_text("".join(json.dumps(r) + "\n" for r in kept))


def worker_segments(rows: list[dict]) -> list[dict]:
    """The worker group over the run: [{"workers", "first_step", "last_step"}], a new entry
    at every restart of the group (a resize of an elastic run, or a recovery). Log rows
    carry "workers"; the first of each group also "started_at_step", the step it took over
    at (the checkpoint it loaded)."""
    segments: list[dict] = []
    for row in rows:
        if "workers" not in row:
            continue
        started = row.get("started_at_step")
        if segments and started is None and segments[-1]["workers"] == row["workers"]:
            segments[-1]["last_step"] = row["step"]
            continue
        if started is None:  # a resize logged before rows said where groups start
            started = segments[-1]["last_step"] if segments else 0
        segments.append(
            {"workers": row["workers"], "first_step": started + 1, "last_step": row["step"]}
        )
    return segments
