"""The tracking section of a training job: where its one MLflow run is recorded (or nowhere).

The default is MLflow embedded: a SQLite store and an artifact folder under output_dir, no
server. ``uri`` names any MLflow tracking server instead. The run's rank 0 logs the metrics,
the driver the params, tags and artifacts (tracking/).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.fields import one_of, positive, require, setting

BACKENDS = ("mlflow", "none")
IF_UNREACHABLE = ("fail", "continue")
URI_SCHEMES = ("sqlite:///", "http://", "https://")


@dataclass
class TrackingConfig:
    backend: str = setting(
        "mlflow",
        "mlflow (one MLflow run per job: params, tags, metrics per log step, artifacts, the "
        "export as a model version) | none (nothing tracked; MLflow is never imported)",
    )
    uri: str | None = setting(
        None,
        "null = embedded: sqlite:///<output_dir>/mlflow.db with artifacts in "
        "<output_dir>/mlartifacts (`make ui` shows it); or an MLflow tracking server, "
        "http(s)://HOST:PORT (needed when rank 0 runs on another node than the driver), or "
        "sqlite:///ABSOLUTE/PATH.db",
    )
    experiment_name: str | None = setting(
        None, "the MLflow experiment; null = the job's `experiment` (pretrain, finetune, dpo)"
    )
    if_unreachable: str = setting(
        "fail",
        "a tracking server that does not answer before the run starts: fail (one line naming "
        "it, before anything starts) | continue (the run goes on, the log says tracking is off)",
    )
    connect_timeout_s: float = setting(
        5.0, "how long the check before the run waits for the tracking server to answer"
    )
    register_model: bool = setting(
        True, "register the export as a model version, its lineage (run id, data) in the tags"
    )
    model_name: str | None = setting(
        None, "the registered model's name; null = zeroray-<experiment>"
    )
    parent_run_id: str | None = setting(
        None,
        "the MLflow run this job's run is a child of (its mlflow.parentRunId tag); `make "
        "pipeline` sets it to the pipeline's run",
    )

    def __post_init__(self) -> None:
        one_of("tracking.backend", self.backend, BACKENDS)
        one_of("tracking.if_unreachable", self.if_unreachable, IF_UNREACHABLE)
        positive("tracking.connect_timeout_s", self.connect_timeout_s)
        if self.uri is not None:
            require(
                self.uri.startswith(URI_SCHEMES) and len(self.uri) > len("sqlite:///"),
                "tracking.uri",
                "null (embedded under output_dir), http(s)://HOST:PORT of an MLflow "
                "tracking server, or sqlite:///ABSOLUTE/PATH.db",
                self.uri,
            )

    @property
    def enabled(self) -> bool:
        return self.backend != "none"
