"""The pipeline in MLflow: one parent run per invocation that runs a stage, each stage's run
its child (tag ``mlflow.parentRunId``), all in one experiment so that the UI nests them.
An invocation after one that failed or was killed continues that one's parent run (its id
kept in <pipeline dir>/.parent_run), so a pipeline finished after a failure is one parent run.

The training stages open their own runs (cluster/training/tracking.py) and are told the
parent (tracking.parent_run_id); for the stages that track nothing themselves (prepare,
eval, serve-config) the pipeline opens the child run, with the stage's headline figures
and its manifest. The parent opens when the first stage runs: an unchanged rerun imports no
MLflow. As for jobs, a tracker failure never fails the pipeline (tracking/guard.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from cluster.stages.graph import TRAINING_KINDS
from cluster.stages.kinds import experiment_name
from cluster.training.tracking import git_commit
from console import log
from rundir.stage_manifest import pipeline_dir
from schemas.jobs import PipelineConfig
from tracking.guard import Guard
from tracking.params import flatten
from tracking.store import artifact_root, sqlite_path

PARENT_RECORD = ".parent_run"  # the last invocation's parent run: id, store, status


class PipelineTracking:
    def __init__(self, cfg: PipelineConfig, uri: str | None):
        self.cfg, self.uri = cfg, uri
        self.guard = Guard(on=uri is not None)
        self.parent = None

    def parent_run_id(self) -> str | None:
        """The parent run's id, the run opened on first use; None with tracking off."""
        if self.parent is None and self.guard.on:
            name = f"{self.cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.parent = self._open(name, self._unfinished_parent())
            if self.parent is not None:
                self._record("RUNNING")
                params = flatten(dataclasses.asdict(self.cfg))
                self.guard("logging params", self.parent.log_params, params)
                tags = {"mlflow.source.git.commit": git_commit(), "zeroray.pipeline": self.cfg.name}
                self.guard("setting tags", self.parent.set_tags, tags)
                how = "continues" if self.parent.continued else "is"
                log.info(
                    f"tracking: this pipeline {how} MLflow run {self.parent.run_id} in {self.uri}"
                )
        return self.parent.run_id if self.parent is not None else None

    def stage_done(self, kind: str, manifest: dict, manifest_file: Path) -> None:
        """A child run for a stage that tracks nothing itself; the stage on the parent."""
        parent = self.parent_run_id()
        if parent is None:
            return
        stage = manifest["stage"]
        if kind not in TRAINING_KINDS:
            child = self._open(f"{self.cfg.name}-{stage}")
            if child is not None:
                tags = {"mlflow.parentRunId": parent, "zeroray.stage": stage}
                tags["zeroray.lineage_id"] = manifest.get("lineage_id", "")
                self.guard("setting tags", child.set_tags, tags)
                self.guard("logging figures", child.log_figures, manifest.get("headline", {}))
                self.guard("logging the manifest", child.log_artifact, manifest_file)
                self.guard("ending the run", child.end, _status(manifest))
        self.guard(
            "setting tags", self.parent.set_tags, {f"zeroray.stage.{stage}": _status(manifest)}
        )

    def end(self, status: str, lineage_id: str | None = None) -> None:
        if self.parent is not None:
            if lineage_id:
                self.guard("setting tags", self.parent.set_tags, {"zeroray.lineage_id": lineage_id})
            self.guard("ending the run", self.parent.end, status)
            self._record(status)

    def _record_path(self) -> Path:
        return pipeline_dir(self.cfg.output_dir, self.cfg.name) / PARENT_RECORD

    def _unfinished_parent(self) -> str | None:
        """The parent run of the last invocation, if it did not finish (failed or killed)."""
        try:
            record = json.loads(self._record_path().read_text())
        except (OSError, ValueError):
            return None
        return record.get("run_id") if record.get("status") != "FINISHED" else None

    def _record(self, status: str) -> None:
        path = self._record_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"run_id": self.parent.run_id, "uri": self.uri, "status": status}
        path.write_text(json.dumps(record) + "\n")

    def _open(self, run_name: str, continue_run_id: str | None = None):
        from tracking.mlflow_run import JobRun

        db = sqlite_path(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        root = artifact_root(self.uri)
        location = Path(root).as_uri() if root else None
        return self.guard(
            "opening the run",
            JobRun.open,
            self.uri,
            experiment_name(self.cfg),
            location,
            run_name,
            continue_run_id,
        )


def _status(manifest: dict) -> str:
    return "FINISHED" if manifest["status"] == "finished" else "FAILED"
