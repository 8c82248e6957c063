"""The driver's side of a job's one MLflow run: create it (or continue the run a resumed job
started), its params, tags and artifacts, the export as a model version, and its end."""

from __future__ import annotations

from pathlib import Path

from tracking.params import batches


class JobRun:
    def __init__(self, client, run_id: str, experiment_id: str, continued: bool):
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id
        self.continued = continued  # an earlier invocation (resume=latest) created it

    @classmethod
    def open(
        cls,
        uri: str,
        experiment: str,
        artifact_location: str | None,
        run_name: str,
        continue_run_id: str | None = None,
    ) -> JobRun:
        """The run ``continue_run_id`` when the store still holds it, else a new run."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        if continue_run_id:
            try:
                run = client.get_run(continue_run_id)
            except MlflowException:
                run = None  # deleted, or another store: a new run says what it continues
            if run is not None and run.info.lifecycle_stage == "active":
                client.update_run(run.info.run_id, status="RUNNING")
                return cls(client, run.info.run_id, run.info.experiment_id, True)
        experiment_id = _experiment_id(client, experiment, artifact_location)
        run = client.create_run(experiment_id, run_name=run_name)
        return cls(client, run.info.run_id, experiment_id, False)

    def log_params(self, params: dict[str, str]) -> dict[str, str]:
        """Logs the params the run lacks. MLflow never changes a logged param: those a
        continued run already holds with another value are returned instead."""
        held = self.client.get_run(self.run_id).data.params
        for batch in batches({k: v for k, v in params.items() if k not in held}):
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in batch.items()])
        return {k: v for k, v in params.items() if k in held and held[k] != v}

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_figures(self, figures: dict[str, float], step: int = 0) -> None:
        """Summary figures as metrics at one step (a pipeline stage's headline figures)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in figures.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def register(self, model_name: str, source: str, tags: dict[str, str]) -> str:
        """A new version of ``model_name`` whose files are ``source`` (the export stays where
        it is: no copy); returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(model_name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(
            model_name, source=source, run_id=self.run_id, tags=tags
        )
        return version.version

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def _experiment_id(client, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = f"{artifact_location}/{name}" if artifact_location else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another job created it a moment ago
        return client.get_experiment_by_name(name).experiment_id
