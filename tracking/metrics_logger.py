"""Rank 0's metrics, one MLflow record per log step, in the job's one run.

A background thread owns the MLflow client: opening it (importing MLflow, reading the store)
overlaps the engine build, and the training loop never waits on the tracker. The step guard:
a worker group restarted from a checkpoint (a recovery, an elastic resize, resume=latest)
redoes the steps after it, which the run may already hold; the logger reads the run's last
logged step when it opens and logs only later steps, so no step is ever logged twice.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Protocol

from schemas.run_spec import TrackingTarget
from tracking.guard import Guard

NOT_CURVES = ("started_at_step",)  # a row's bookkeeping, not a series


def metric_key(name: str) -> str:
    """metrics.jsonl's names -> MLflow's: val_loss -> val/loss, loss -> train/loss."""
    return f"val/{name[4:]}" if name.startswith("val_") else f"train/{name}"


def numeric_metrics(row: dict) -> dict[str, float]:
    return {
        metric_key(k): float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_CURVES
    }


class Sink(Protocol):
    def last_step(self) -> int:
        """The highest step the run holds a metric at; -1 for none."""

    def log(self, step: int, timestamp_ms: int, metrics: dict[str, float]) -> None: ...


class MlflowSink:
    def __init__(self, target: TrackingTarget):
        from mlflow import MlflowClient

        from tracking.store import sqlite_path

        db = sqlite_path(target.uri)
        if db is not None and not db.is_file():  # rank 0 on a node without the driver's disk
            raise FileNotFoundError(
                f"the store {db} is not on this node (name a tracking server: tracking.uri)"
            )
        self.client, self.run_id = MlflowClient(tracking_uri=target.uri), target.run_id

    def last_step(self) -> int:
        keys = self.client.get_run(self.run_id).data.metrics
        steps = [m.step for key in keys for m in self.client.get_metric_history(self.run_id, key)]
        return max(steps, default=-1)

    def log(self, step: int, timestamp_ms: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        records = [Metric(k, v, timestamp_ms, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=records)


class MetricsLogger:
    """``log(step, row)`` queues; ``close()`` waits until everything queued is written."""

    def __init__(self, open_sink, close_timeout_s: float = 60.0):
        self.guard = Guard()
        self.close_timeout_s = close_timeout_s
        self.skipped: list[int] = []  # steps the run held already (redone after a restart)
        self.last_step: int | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(
            target=self._drain, args=(open_sink,), name="tracking", daemon=True
        )
        self._thread.start()

    def log(self, step: int, row: dict) -> None:
        metrics = numeric_metrics(row)
        if metrics and self.guard.on:
            self._queue.put((step, int(time.time() * 1000), metrics))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(self.close_timeout_s)
        if self._thread.is_alive():
            self.guard.off(f"the store did not take the last metrics in {self.close_timeout_s} s")

    def _drain(self, open_sink) -> None:
        sink = self.guard("opening the run", open_sink)
        last = self.guard("reading the run's last step", sink.last_step) if sink else None
        self.last_step = -1 if last is None else last  # None: the guard is off already
        while (item := self._queue.get()) is not None:
            if not self.guard.on:
                continue  # keep draining so close() returns
            step, timestamp_ms, metrics = item
            if step <= self.last_step:
                self.skipped.append(step)
                continue
            self.guard(f"logging step {step}", sink.log, step, timestamp_ms, metrics)
            self.last_step = step


def open_metrics_logger(target: TrackingTarget) -> MetricsLogger:
    return MetricsLogger(lambda: MlflowSink(target))
