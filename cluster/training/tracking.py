"""What the driver records about a training job in its one tracking run: checked before
anything starts, opened (or continued, for resume=latest) once the data is ready, then the
resolved config as params, the tags (git commit, library versions, workers, data
fingerprint), the artifacts and the export as a model version. Every call after the check
goes through a Guard: a tracker failure mid-run never fails training.

The workers' rank 0 logs the metrics into the same run (tracking/metrics_logger.py), told
its id by the RunSpec. A job that is a stage of `make pipeline` is told the pipeline's run
(tracking.parent_run_id) and tags its own run ``mlflow.parentRunId``, its child."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from cluster.runs import storage
from console import log
from dataprep.cache import PreparedData
from rundir import layout
from rundir.checkpoints import CheckpointInfo
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig
from schemas.run_spec import RunSpec, TrackingTarget
from tracking.guard import Guard
from tracking.params import flatten
from tracking.store import (
    artifact_root,
    embedded_uri,
    read_record,
    sqlite_path,
    unreachable_reason,
    write_record,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("torch", "deepspeed", "ray", "transformers", "peft", "mlflow-skinny")


def store_uri(cfg: TrainJobConfig) -> str:
    """tracking.uri, or the embedded store under output_dir (its local mirror for a URI)."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if storage.is_uri(cfg.output_dir):
        return embedded_uri(storage.mirror_dir(cfg.cache_dir, cfg.output_dir))
    return embedded_uri(cfg.output_dir)


def check_tracking(cfg: TrainJobConfig) -> str | None:
    """The store to track in (None: tracking is off), before anything starts: a store that
    cannot be reached is refused in one line, or with if_unreachable=continue the run goes
    on untracked."""
    if not cfg.tracking.enabled:
        return None
    uri = store_uri(cfg)
    reason = unreachable_reason(uri, cfg.tracking.connect_timeout_s)
    if reason is None:
        return uri
    if cfg.tracking.if_unreachable == "continue":
        log.warning(f"tracking: {reason}; tracking is off for this run")
        return None
    raise ConfigError(
        f"tracking.uri={uri!r} cannot be reached: {reason}; allowed: a running MLflow "
        "tracking server, tracking=none, or tracking.if_unreachable=continue"
    )


class JobTracking:
    """The job's run as the driver sees it; with tracking off, every method does nothing."""

    def __init__(self, run=None, uri: str | None = None):
        self.run, self.uri = run, uri
        self.guard = Guard(on=run is not None)
        self.data_fingerprint: str | None = None

    @property
    def target(self) -> TrackingTarget | None:
        return TrackingTarget(self.uri, self.run.run_id) if self.guard.on else None

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.guard.on:
            self.guard("setting tags", self.run.set_tags, tags)

    def record_start(self, spec: RunSpec, prepared: PreparedData, run_dir: Path) -> None:
        if not self.guard.on:
            return
        self.data_fingerprint = data_fingerprint(prepared)
        changed = self.guard("logging params", self.run.log_params, config_params(spec.cfg))
        changed = changed or {}
        tags = run_tags(spec, prepared, run_dir)
        if changed:  # a resumed job's settings that differ from the first invocation's
            tags[f"zeroray.resumed.{run_dir.name}"] = ", ".join(
                f"{k}={v}" for k, v in sorted(changed.items())
            )[:5000]
        self.set_tags(tags)
        self.log_artifact(run_dir / layout.CONFIG)
        report = prepared.stats.get("data_report")
        for path in (report, report and str(Path(report).with_suffix(".png"))):
            if path and Path(path).is_file():
                self.log_artifact(path, "data")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.guard.on:
            self.guard(f"logging {Path(path).name}", self.run.log_artifact, path, artifact_path)

    def record_end(self, cfg: TrainJobConfig, run_dir: Path) -> None:
        """The run's outputs as artifacts, the export as a model version, and its end."""
        if not self.guard.on:
            return
        for name in (layout.LOSS_PICTURE, layout.SUMMARY, layout.EVAL):
            if (run_dir / name).is_file():
                self.log_artifact(run_dir / name)
        export = run_dir / layout.EXPORT
        if cfg.tracking.register_model and layout.is_export(export) and self.guard.on:
            source = str(export)
            if storage.is_uri(cfg.output_dir):  # the export at its URI, not the local mirror
                run = storage.run_uri(cfg.output_dir, cfg.experiment, run_dir.name)
                source = storage.join(run, layout.EXPORT)
            name = cfg.tracking.model_name or f"zeroray-{cfg.experiment}"
            tags = lineage_tags(self.run.run_id, self.data_fingerprint, cfg, run_dir)
            version = self.guard("registering the export", self.run.register, name, source, tags)
            if version:
                log.info(f"tracking: export registered as {name} version {version}")
        self.end("FINISHED")

    def end(self, status: str) -> None:
        if self.guard.on:
            self.guard(f"ending the run ({status})", self.run.end, status)


def open_tracking(
    cfg: TrainJobConfig, uri: str | None, run_dir: Path, resume: CheckpointInfo | None
) -> JobTracking:
    """The job's run: the one the resumed run directory names (same store), else a new one;
    its id is written into this run directory (tracking.json)."""
    if uri is None:
        return JobTracking()
    from tracking.mlflow_run import JobRun

    db = sqlite_path(uri)
    if db is not None:  # SQLite creates the file, not its folder (a URI run's local mirror)
        db.parent.mkdir(parents=True, exist_ok=True)
    # The resumed run directory names its tracking run. A checkpoint at a URI: its record is
    # on the disk of the driver that wrote it, so the resumed job opens a new run.
    previous = None
    if resume is not None and not storage.is_uri(resume.path):
        previous = read_record(Path(resume.path).parent)
    continue_id = previous["run_id"] if previous and previous.get("uri") == uri else None
    root = artifact_root(uri)
    run = Guard()(
        "opening the run",
        JobRun.open,
        uri,
        cfg.tracking.experiment_name or cfg.experiment,
        Path(root).as_uri() if root else None,
        run_dir.name,
        continue_id,
    )
    if run is None:  # the Guard said why, in one line
        return JobTracking()
    tracking = JobTracking(run, uri)
    write_record(run_dir, uri, run.run_id, run.experiment_id)
    how = "continues" if run.continued else "is"
    log.info(f"tracking: this job {how} MLflow run {run.run_id} in {uri}")
    return tracking


def config_params(cfg: TrainJobConfig) -> dict[str, str]:
    return flatten(dataclasses.asdict(cfg))


def data_fingerprint(prepared: PreparedData) -> str:
    """The prepared data's cache key: a hash of every input and setting (dataprep/cache.py)."""
    return Path(prepared.dataset_dir).parent.name


def run_tags(spec: RunSpec, prepared: PreparedData, run_dir: Path) -> dict[str, str]:
    low, high = spec.batch.min_workers, spec.batch.max_workers
    tags = {
        "mlflow.source.git.commit": git_commit(),
        "zeroray.objective": spec.objective,
        "zeroray.workers": str(high) if low == high else f"{low}-{high}",
        "zeroray.data_fingerprint": data_fingerprint(prepared),
        "zeroray.run_dir": str(run_dir),
        "zeroray.python": sys.version.split()[0],
    }
    for name in LIBRARIES:
        try:
            tags[f"zeroray.version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    if spec.cfg.model.name_or_path:
        tags["zeroray.base_model"] = spec.cfg.model.name_or_path
    if spec.cfg.tracking.parent_run_id:  # a stage of `make pipeline`: its run's child
        tags["mlflow.parentRunId"] = spec.cfg.tracking.parent_run_id
    return tags


def lineage_tags(run_id: str, fingerprint: str, cfg: TrainJobConfig, run_dir: Path) -> dict:
    """Where a registered export came from: the run that trained it, the data and the model
    it started from."""
    tags = {
        "lineage.run_id": run_id,
        "lineage.data_fingerprint": fingerprint,
        "lineage.run_dir": str(run_dir),
    }
    if cfg.model.name_or_path:
        tags["lineage.base_model"] = cfg.model.name_or_path
    return tags


def git_commit() -> str:
    """This checkout's commit; "unknown" outside a git checkout (an installed image)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
