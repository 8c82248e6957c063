"""Reading what a training job left in its MLflow store (the embedded SQLite store under
output_dir, by default), for the tests that assert on the runs they already train."""

from __future__ import annotations

from pathlib import Path

from rundir.layout import TRACKING
from tracking.store import embedded_uri, read_record


def client_of(output_dir: str | Path):
    from mlflow import MlflowClient

    uri = embedded_uri(output_dir)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs_in(output_dir: str | Path, experiment: str) -> list:
    """Every run of ``experiment`` in the store under ``output_dir``."""
    client = client_of(output_dir)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def run_of(run_dir: Path):
    """The MLflow run a run directory names (tracking.json), read from its store."""
    record = read_record(run_dir)
    assert record, f"{run_dir / TRACKING} is missing"
    from mlflow import MlflowClient

    return MlflowClient(record["uri"]).get_run(record["run_id"])


def history(output_dir: str | Path, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every record of ``key``, duplicates included, in step order."""
    records = client_of(output_dir).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in records)
