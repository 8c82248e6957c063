"""metrics.jsonl survives a crash mid-write: the restart that reads it still works."""

from __future__ import annotations

import json

import pytest

from rundir.metrics_file import read_metrics
from trainer.metrics import MetricsWriter


def test_a_torn_last_line_is_skipped_and_a_restart_continues(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 10, "loss": 5.0}, {"step": 20, "loss": 4.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 30, "lo')
    assert read_metrics(path) == rows
    # A worker group restarted from the step-20 checkpoint rewrites the file and appends.
    writer = MetricsWriter(str(tmp_path), resume_step=20)
    writer.write(30, {"loss": 4.2})
    writer.close()
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 30]


def test_a_bad_line_before_the_last_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10}\nnot json\n{"step": 30}\n')
    with pytest.raises(json.JSONDecodeError):
        read_metrics(path)
