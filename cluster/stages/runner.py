"""The planned stages run in order: each one's inputs resolved from the manifests of the
stages that made them, skipped when its finished manifest has the same config hash and
inputs (and its outputs are still there), else run through its job's ``main(overrides)``,
its manifest written before (running) and after (finished or failed)."""

from __future__ import annotations

import time

from cluster.stages import kinds
from cluster.stages.graph import TRAINING_KINDS
from cluster.stages.plan import PlannedStage
from cluster.stages.tracking import PipelineTracking
from cluster.training.tracking import git_commit
from console import log
from rundir.stage_manifest import (
    FAILED,
    FINISHED,
    RUNNING,
    digest,
    fingerprint,
    manifest_path,
    output_record,
    read_manifest,
    why_run,
    write_manifest,
)
from schemas.jobs import PipelineConfig
from tracking.store import read_record


def input_records(stage: PlannedStage, done: dict[str, dict]) -> list[dict]:
    """Each input as the manifest of the stage that made it records it: id, path, hash."""
    records = []
    for key, (source, output) in sorted(stage.needs.items()):
        made = done[source]["outputs"][output]
        records.append(
            {
                "name": key,
                "ref": f"{source}.{output}",
                "id": made["id"],
                "path": made["path"],
                "sha256": made["sha256"],
                "parts": made.get("parts"),
                "lineage_id": done[source]["lineage_id"],
            }
        )
    return records


def check_unchanged(inputs: list[dict]) -> None:
    """An input is read as it was made: its content hashed again before the stage reads it."""
    for record in inputs:
        now = fingerprint(record["path"], record["parts"])["sha256"]
        if now != record["sha256"]:
            raise RuntimeError(
                f"{record['ref']} ({record['path']}) changed after its stage made it; rerun "
                f"that stage (delete its manifest) or restore the file"
            )


def lineage_id(inputs: list[dict], outputs: dict[str, dict]) -> str:
    """A chain of content: the stage's output ids and its inputs' lineage ids (so the id of
    an export names the data and every model before it)."""
    chain = {
        "inputs": [i["lineage_id"] for i in inputs],
        "outputs": sorted(o["id"] for o in outputs.values()),
    }
    return digest(chain)[:16]


def run_name(cfg: PipelineConfig, stage: PlannedStage) -> str:
    """A new run directory name for a training stage: <pipeline>-<stage>-<time>."""
    base = f"{cfg.name}-{stage.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while (kinds.run_dir(stage.config, name)).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def run_stage(
    cfg: PipelineConfig, stage: PlannedStage, inputs: list[dict], tracking: PipelineTracking
) -> dict:
    check_unchanged(inputs)
    name = run_name(cfg, stage) if stage.kind in TRAINING_KINDS else stage.name
    lineage = inputs[0]["lineage_id"] if stage.kind == "serve-config" and inputs else None
    parent = tracking.parent_run_id()
    argv = [
        *stage.overrides,
        *kinds.input_overrides(stage.kind, {i["name"]: i["path"] for i in inputs}),
        *kinds.run_overrides(stage.kind, name, parent, lineage),
    ]
    path = manifest_path(cfg.output_dir, cfg.name, stage.name)
    manifest = {
        "stage": stage.name,
        "job": stage.kind,
        "status": RUNNING,
        "config_hash": stage.config_hash,
        "code_version": git_commit(),
        "overrides": argv,
        "inputs": inputs,
        "started": time.time(),
    }
    write_manifest(path, manifest)
    stage.workdir.mkdir(parents=True, exist_ok=True)
    try:
        code = kinds.run(stage.kind, argv, stage.workdir)
        if code != 0:
            raise RuntimeError(f"stage {stage.name} exited with code {code}")
        found = kinds.outputs(stage.kind, stage.config, name, stage.workdir)
        data = [i for i in inputs if i["ref"].endswith(".data")]
        if stage.kind == "train" and data:
            kinds.check_trained_on(stage.config, name, data[0]["path"])
        outputs = {
            key: output_record(stage.name, key, p, kinds.CONTENT.get(key))
            for key, p in found.items()
        }
        manifest |= {
            "status": FINISHED,
            "outputs": outputs,
            "headline": kinds.headline(stage.kind, stage.config, name, found),
            "lineage_id": lineage_id(inputs, outputs),
            "ids": job_ids(stage, name),
        }
    except BaseException as e:
        text = str(e).strip().splitlines()
        manifest |= {"status": FAILED, "error": f"{type(e).__name__}: {text[0] if text else ''}"}
        raise
    finally:
        manifest["ended"] = time.time()
        write_manifest(path, manifest)
        tracking.stage_done(stage.kind, manifest, path)
    return manifest


def job_ids(stage: PlannedStage, name: str) -> dict:
    """The ids a stage's work is known by elsewhere: the Ray job this driver is, the
    training run's directory and its MLflow run."""
    import ray

    ids = {}
    if ray.is_initialized():
        ids["ray_job_id"] = ray.get_runtime_context().get_job_id()
    if stage.kind in TRAINING_KINDS:
        directory = kinds.run_dir(stage.config, name)
        ids["run_dir"] = str(directory)
        record = read_record(directory)
        if record:
            ids["mlflow_run_id"] = record["run_id"]
    return ids


def run_pipeline(
    cfg: PipelineConfig, planned: list[PlannedStage], tracking: PipelineTracking
) -> list[dict]:
    """Every stage's manifest, in order; ``ran`` on those that ran this time."""
    done: dict[str, dict] = {}
    for stage in planned:
        inputs = input_records(stage, done)
        path = manifest_path(cfg.output_dir, cfg.name, stage.name)
        reason = why_run(read_manifest(path), stage.config_hash, inputs)
        if reason is None:
            log.info(f"pipeline: {stage.name} unchanged, skipped ({path})")
            done[stage.name] = read_manifest(path) | {"ran": False}
            continue
        log.info(f"pipeline: {stage.name} ({stage.kind}) runs: {reason}")
        try:
            done[stage.name] = run_stage(cfg, stage, inputs, tracking) | {"ran": True}
        except BaseException:
            log.error(
                f"pipeline: stage {stage.name} failed (manifest {path}); `make pipeline` again "
                "continues from it"
            )
            tracking.end("FAILED")
            raise
    last = done[planned[-1].name]
    tracking.end("FINISHED", last.get("lineage_id"))
    return [done[s.name] for s in planned]
