"""`make pipeline` without Ray: references resolved to the paths earlier manifests record,
bad pipelines refused in one line before anything runs, the config hash, and the skip
decision (with each stage's job replaced by a stand-in that writes its output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster import pipeline
from cluster.schema import load_config
from cluster.stages import kinds
from cluster.stages.graph import stage_order
from cluster.stages.plan import absolute, plan
from cluster.stages.runner import input_records
from rundir.stage_manifest import (
    FINISHED,
    fingerprint,
    manifest_path,
    output_record,
    read_manifest,
    still_there,
    why_run,
)
from schemas.fields import ConfigError
from schemas.jobs import StageConfig

ORDER = ["prepare", "pretrain", "finetune", "dpo", "eval", "serve"]


def planned(tmp_path: Path, *overrides: str):
    cfg = absolute(load_config("pipeline", [f"output_dir={tmp_path}", "tracking=none", *overrides]))
    return cfg, plan(cfg)


def test_the_default_pipeline_plans_in_order_with_inputs_by_reference(tmp_path):
    cfg, stages = planned(tmp_path)
    assert [s.name for s in stages] == ORDER
    by_name = {s.name: s for s in stages}
    assert by_name["finetune"].needs == {"base": ("pretrain", "export")}
    assert by_name["serve"].needs == {"export": ("dpo", "export")}
    # A stage's input becomes its job's override only once the earlier manifest is read.
    done = {
        "dpo": {
            "outputs": {"export": {"id": "dpo.export@ab", "path": "/x/export", "sha256": "s"}},
            "lineage_id": "L",
        }
    }
    [record] = input_records(by_name["eval"], done)
    assert record | {} == {
        "name": "export",
        "ref": "dpo.export",
        "id": "dpo.export@ab",
        "path": "/x/export",
        "sha256": "s",
        "parts": None,
        "lineage_id": "L",
    }
    assert kinds.input_overrides("eval", {"export": "/x/export"}) == ["export=/x/export"]
    assert kinds.input_overrides("dpo", {"base": "/y"}) == ["model.name_or_path=/y"]
    # Stages listed out of order run in the order their inputs need; ties as listed.
    listed = {
        "eval": StageConfig("eval", {"export": "tune.export"}),
        "tune": StageConfig("finetune", {"base": "train.export"}),
        "train": StageConfig("train"),
        "other": StageConfig("eval", {"export": "train.export"}),
    }
    assert stage_order(listed) == ["train", "tune", "other", "eval"]


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("stages.eval.inputs.export=dpo.report", "stages.eval.inputs.export='dpo.report'"),
        ("stages.eval.inputs.export=nowhere.export", "stages.eval.inputs.export='nowhere"),
        ("stages.eval.inputs.export=/runs/dpo/x/export", "a reference STAGE.OUTPUT"),
        ("stages.pretrain.inputs.data=finetune.export", "stages.pretrain.inputs.data="),
        ("stages.finetune.inputs={base: dpo.export}", "cycle (finetune -> dpo -> finetune)"),
        ("stages.eval.job=evaluate", "stages.eval.job='evaluate' is not allowed: one of"),
        ("+stages.eval.inputs.base=pretrain.export", "eval takes the inputs: export"),
        ("+stages.eval.retries=1", "stages.eval.retries: unknown key"),
        ("stages.finetune.overrides=['trainer.max_stepz=3']", "stages.finetune (finetune): "),
        ("stages.dpo.overrides=['dpo.beta=-1']", "stages.dpo (dpo): dpo.beta"),
        ("name=../up", "name='../up'"),
    ],
)
def test_a_bad_pipeline_is_one_line_naming_it_before_anything_runs(tmp_path, override, names):
    with pytest.raises(ConfigError) as e:
        planned(tmp_path, override)
    assert names in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "pipelines").exists()


def test_the_cli_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        "sys.argv", ["cluster.pipeline", f"output_dir={tmp_path}", "stages.eval.job=x"]
    )
    with pytest.raises(SystemExit) as e:
        pipeline.run_cli(pipeline.main)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: stages.eval.job='x'") and "\n" not in err


def test_the_config_hash_follows_a_stages_settings_and_nothing_else(tmp_path):
    _, base = planned(tmp_path)
    _, same = planned(tmp_path)
    _, changed = planned(tmp_path, "stages.finetune.overrides=['optim.lr=2e-3']")
    hashes = lambda stages: {s.name: s.config_hash for s in stages}  # noqa: E731
    assert hashes(base) == hashes(same)
    differ = {n for n in ORDER if hashes(base)[n] != hashes(changed)[n]}
    assert differ == {"finetune"}  # what follows reruns because its input changes
    # A prepare stage's settings are its train stage's too (the same data).
    _, data = planned(tmp_path, "stages.prepare.overrides=['data.max_documents=50']")
    assert {n for n in ORDER if hashes(base)[n] != hashes(data)[n]} == {"prepare", "pretrain"}


def test_a_fingerprint_follows_content_and_names(tmp_path):
    d = tmp_path / "export"
    d.mkdir()
    (d / "a.bin").write_bytes(b"1234")
    first = fingerprint(d)
    assert first["bytes"] == 4 and first["files"] == 1
    (d / "a.bin").rename(d / "b.bin")
    assert fingerprint(d)["sha256"] != first["sha256"]
    (d / "b.bin").write_bytes(b"1235")
    assert fingerprint(d)["sha256"] not in (first["sha256"],)
    record = output_record("pretrain", "export", d)
    assert record["id"] == f"pretrain.export@{record['sha256'][:16]}"
    # Prepared data is what preparation wrote: a cache its readers add is not part of it.
    (d / "arrow-cache").mkdir()
    only = output_record("prepare", "data", d, ["b.bin"])
    (d / "arrow-cache" / "x.arrow").write_bytes(b"added by a reader")
    assert fingerprint(d, ["b.bin"]) == {k: only[k] for k in ("bytes", "files", "sha256")}
    assert still_there(only) and not still_there(output_record("p", "data", d) | {"bytes": 1})


def test_the_skip_decision(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("{}")
    inputs = [{"ref": "dpo.export", "id": "dpo.export@1"}]
    done = {
        "status": FINISHED,
        "config_hash": "h",
        "inputs": inputs,
        "outputs": {"report": output_record("eval", "report", out)},
    }
    assert why_run(done, "h", inputs) is None
    assert why_run(None, "h", inputs) == "no manifest"
    assert why_run(done | {"status": "running"}, "h", inputs) == "its last run is running"
    assert why_run(done, "other", inputs) == "its config changed"
    assert why_run(done, "h", [{"ref": "dpo.export", "id": "dpo.export@2"}]) == "its inputs changed"
    out.write_text("{} ")  # one byte more
    assert "missing or changed" in why_run(done, "h", inputs)


@pytest.fixture
def stand_in_jobs(monkeypatch):
    """Each stage's job replaced by one that writes its output from its overrides (what a
    rerun of the same settings would make again) and records that it ran."""
    ran: list[str] = []
    fail_at: set[str] = set()

    def run(kind, argv, workdir):
        stage = workdir.name
        if stage in fail_at:
            raise RuntimeError(f"{stage} broke")
        ran.append(stage)
        settled = [a for a in argv if not a.startswith(("run_name=", "tracking.parent"))]
        inputs = [Path(a.split("=", 1)[1]) for a in argv if "=" in a]
        made_from = [p.read_text() for p in inputs if p.is_file()]  # as a model its base
        (workdir / "out.txt").write_text(json.dumps([settled, made_from]))
        return 0

    monkeypatch.setattr(kinds, "run", run)
    monkeypatch.setattr(
        kinds, "outputs", lambda kind, cfg, name, workdir: {kinds_output(kind): workdir / "out.txt"}
    )
    monkeypatch.setattr(kinds, "headline", lambda *a: {"figure": 1.0})
    monkeypatch.setattr(kinds, "check_trained_on", lambda *a: None)
    return ran, fail_at


def kinds_output(kind: str) -> str:
    from cluster.stages.graph import OUTPUTS

    return OUTPUTS[kind][0]


def test_unchanged_stages_are_skipped_and_a_failed_one_continues(tmp_path, stand_in_jobs, capsys):
    ran, fail_at = stand_in_jobs
    args = [f"output_dir={tmp_path}", "tracking=none"]
    assert pipeline.main(args) == 0
    assert ran == ORDER
    manifests = {s: read_manifest(manifest_path(tmp_path, "default", s)) for s in ORDER}
    for stage, (source, output) in [
        ("finetune", ("pretrain", "export")),
        ("eval", ("dpo", "export")),
    ]:
        [given] = manifests[stage]["inputs"]
        made = manifests[source]["outputs"][output]
        assert given["id"] == made["id"]
        assert given["sha256"] == fingerprint(made["path"], made.get("parts"))["sha256"]
    assert "chain: prepare" in capsys.readouterr().out

    ran.clear()
    assert pipeline.main(args) == 0
    assert ran == []  # an unchanged rerun runs nothing

    changed = [*args, "stages.finetune.overrides=['optim.lr=2e-3']"]
    fail_at.add("eval")
    with pytest.raises(RuntimeError, match="eval broke"):
        pipeline.main(changed)
    assert ran == ["finetune", "dpo"]
    failed = read_manifest(manifest_path(tmp_path, "default", "eval"))
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: eval broke"

    ran.clear()
    fail_at.clear()
    assert pipeline.main(changed) == 0
    assert ran == ["eval", "serve"]  # continues at the stage that failed


def test_every_stage_kind_is_a_registered_job_or_serve_config():
    from cluster.jobs import JOBS
    from cluster.stages.graph import INPUTS, OUTPUTS
    from schemas.jobs import STAGE_KINDS

    assert tuple(OUTPUTS) == tuple(INPUTS) == STAGE_KINDS
    assert set(STAGE_KINDS) - set(JOBS) == {"serve-config"}
    assert JOBS["pipeline"].module == "cluster.pipeline"


def test_v1_models_shows_the_exports_lineage_id(make_openai_app):
    from fastapi.testclient import TestClient

    for lineage in ("3f2a9c1e0b7d4a65", None):
        with TestClient(make_openai_app(lineage_id=lineage)) as http:
            [card] = http.get("/v1/models").json()["data"]
        assert card["lineage_id"] == lineage


def test_the_invocation_after_a_failure_continues_its_parent_run(tmp_path, stand_in_jobs):
    from mlflow import MlflowClient

    from tracking.store import embedded_uri

    ran, fail_at = stand_in_jobs
    args = [f"output_dir={tmp_path}"]  # tracking on: the embedded store under output_dir
    fail_at.add("eval")
    with pytest.raises(RuntimeError, match="eval broke"):
        pipeline.main(args)
    fail_at.clear()
    assert pipeline.main(args) == 0
    assert pipeline.main([*args, "stages.finetune.overrides=['optim.lr=2e-3']"]) == 0

    client = MlflowClient(embedded_uri(tmp_path))
    experiment = client.get_experiment_by_name("pipeline-default").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    # The failed invocation and the one that finished it: one parent; the changed setting
    # after a finished pipeline: a new one.
    assert [p.info.status for p in parents] == ["FINISHED", "FINISHED"]
    first = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    stages = sorted((r.data.tags["zeroray.stage"], r.info.status) for r in first)
    assert stages == [
        ("eval", "FAILED"), ("eval", "FINISHED"), ("prepare", "FINISHED"), ("serve", "FINISHED")
    ]  # fmt: skip


def test_an_evaluated_export_names_the_stage_manifest_that_made_it(tmp_path):
    from rundir.node_cache import EXPORT_MANIFEST, write_export_manifest
    from rundir.stage_manifest import export_lineage, output_record, write_manifest

    export = tmp_path / "runs" / "finetune" / "run-1" / "export"
    export.mkdir(parents=True)
    (export / "config.json").write_text("{}")
    write_export_manifest(export)
    assert "stage_manifest" not in export_lineage(export, tmp_path / "elsewhere")
    made = output_record("finetune", "export", export)
    stage = manifest_path(tmp_path / "runs", "p", "finetune")
    for status, lineage in [("failed", "0" * 16), ("finished", "ab" * 8)]:
        manifest = {"stage": "finetune", "status": status, "lineage_id": lineage}
        write_manifest(stage.with_name(f"{status}.json"), manifest | {"outputs": {"export": made}})
    # Found through the export's own runs root, whatever output_dir the evaluation names.
    found = export_lineage(export, tmp_path / "elsewhere")
    assert found["stage_manifest"] == str(stage.with_name("finished.json"))
    assert (found["stage"], found["pipeline"], found["lineage_id"]) == ("finetune", "p", "ab" * 8)
    assert found["export_manifest"]["path"] == str(export / EXPORT_MANIFEST)
    assert len(found["export_manifest"]["sha256"]) == 64
