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
METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch


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

    def log(self, records: list[tuple[int, int, dict[str, float]]]) -> None:
        """(step, timestamp in ms, metrics) records, in step order, in one write."""


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

    def log(self, records: list[tuple[int, int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, ms, step) for step, ms, row in records for k, v in row.items()]
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + METRICS_PER_BATCH])


class MetricsLogger:
    """``log(step, row)`` queues; ``flush()`` and ``close()`` wait until everything queued
    is written."""

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

    def flush(self) -> None:
        """Before a checkpoint is reported: every step logged so far is in the store. A
        group killed after the checkpoint restarts from it and logs only later steps, so
        steps still queued then would be missing from the run for good. With tracking off
        (a store that failed or hung) nothing is queued: no wait."""
        if not self.guard.on:
            return
        written = threading.Event()
        self._queue.put(written)
        if not written.wait(self.close_timeout_s):
            self.guard.off(f"the store did not take the metrics in {self.close_timeout_s} s")

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(self.close_timeout_s)
        if self._thread.is_alive():
            self.guard.off(f"the store did not take the last metrics in {self.close_timeout_s} s")

    def _drain(self, open_sink) -> None:
        sink = self.guard("opening the run", open_sink)
        last = self.guard("reading the run's last step", sink.last_step) if sink else None
        self.last_step = -1 if last is None else last  # None: the guard is off already
        done = False
        while not done:
            # Whatever queued up while the store was busy goes in one write: with a metrics
            # row every step, one transaction per step would cost rank 0 CPU time (and the
            # GIL) that the loop needs.
            items = [self._queue.get()]
            while items[-1] is not None and not self._queue.empty():
                items.append(self._queue.get())
            done = items[-1] is None
            fresh = []
            records = [i for i in items if isinstance(i, tuple)]  # not a flush's Event
            for step, timestamp_ms, metrics in records:
                if step <= self.last_step:
                    self.skipped.append(step)
                else:
                    fresh.append((step, timestamp_ms, metrics))
                    self.last_step = step
            if fresh and self.guard.on:
                self.guard(f"logging steps {fresh[0][0]}-{fresh[-1][0]}", sink.log, fresh)
            for flushed in (i for i in items if isinstance(i, threading.Event)):
                flushed.set()


def open_metrics_logger(target: TrackingTarget) -> MetricsLogger:
    return MetricsLogger(lambda: MlflowSink(target))
