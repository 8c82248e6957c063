"""`make pipeline` on the local Ray cluster, in-process: the session's tiny pipeline
(tiny_pipeline.py: prepare -> pretrain -> finetune -> eval -> serve config), then an unchanged
rerun, a changed fine-tuning setting with a stage that fails inside, and the rerun that
continues from it; then a pipeline SIGKILLed while fine-tuning, and its rerun. MLflow on: the
pipeline's parent run, each stage's run its child."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import EVAL, FINETUNE, STAGES, listed, manifests, tiny_pipeline
from tracked_runs import runs_in

from cluster.pipeline import main
from rundir.stage_manifest import fingerprint, manifest_path, read_manifest
from schemas.fields import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def ran_since(before: dict, after: dict) -> list[str]:
    """The stages whose manifest is newer than it was (a skipped stage's is untouched)."""
    return [
        s for s in STAGES if after[s] and (before[s] or {}).get("started") != after[s]["started"]
    ]


def test_a_tiny_pipeline_runs_skips_reruns_what_changed_and_continues(
    tiny_pipeline_root, tiny_cache
):
    root = tiny_pipeline_root
    first = manifests(root)
    assert all(m["status"] == "finished" for m in first.values())
    # Each stage's inputs are the outputs its references name: their ids, and the hashes of
    # what is on disk now.
    for stage, source in [("pretrain", "prepare"), ("finetune", "pretrain"), ("eval", "finetune")]:
        [given] = first[stage]["inputs"]
        made = next(iter(first[source]["outputs"].values()))
        assert given["id"] == made["id"] and given["path"] == made["path"]
        assert (
            given["sha256"]
            == made["sha256"]
            == fingerprint(made["path"], made.get("parts"))["sha256"]
        )
    assert first["pretrain"]["headline"]["steps"] == 4
    assert first["eval"]["headline"]["perplexity"] > 1
    # The served export's lineage: the finetune stage's, in the Serve config it deploys.
    served = yaml.safe_load((root / "pipelines/default/serve/serve_config.yaml").read_text())
    args = served["applications"][0]["args"]
    assert args["lineage_id"] == first["finetune"]["lineage_id"]
    assert args["model_dir"] == first["finetune"]["outputs"]["export"]["path"]

    # MLflow: one parent run, and each stage's run its child, all in the pipeline's experiment.
    runs = runs_in(root, "pipeline-default")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(STAGES)
    assert {first[s]["ids"]["mlflow_run_id"] for s in ("pretrain", "finetune")} <= {
        r.info.run_id for r in children
    }

    started = time.perf_counter()
    assert main(tiny_pipeline(root, tiny_cache)) == 0
    rerun_s = time.perf_counter() - started
    assert ran_since(first, manifests(root)) == [] and rerun_s < 30, rerun_s

    # A changed fine-tuning setting reruns finetune; the eval stage then fails inside (it
    # asks the 2-CPU cluster for 4 CPUs once Ray is up).
    changed = listed("finetune", [*FINETUNE, "optim.lr=2e-3"])
    failing = listed("eval", [*EVAL, "eval.num_cpus=4"])
    with pytest.raises(ConfigError, match="eval.num_cpus=4"):
        main(tiny_pipeline(root, tiny_cache, changed, failing))
    second = manifests(root)
    assert ran_since(first, second) == ["finetune", "eval"]
    assert second["eval"]["status"] == "failed" and second["serve"] == first["serve"]

    # The rerun continues at the stage that failed: eval, and the serve config after it.
    assert main(tiny_pipeline(root, tiny_cache, changed)) == 0
    third = manifests(root)
    assert ran_since(second, third) == ["eval", "serve"]
    assert third["eval"]["inputs"][0]["id"] == third["finetune"]["outputs"]["export"]["id"]
    assert (
        third["finetune"]["outputs"]["export"]["id"] != first["finetune"]["outputs"]["export"]["id"]
    )
    # The evaluation report names the stage manifest of the export it evaluated.
    report = json.loads((root / "pipelines/default/eval/eval.json").read_text())
    assert report["lineage"]["stage_manifest"] == str(manifest_path(root, "default", "finetune"))
    assert report["lineage"]["lineage_id"] == third["finetune"]["lineage_id"]
    assert report["lineage"]["export_manifest"]["path"].startswith(
        third["finetune"]["outputs"]["export"]["path"]
    )

    # The invocation that failed and the one that finished it are one parent run: two parents
    # in all, both finished; the second's children are finetune, the failed eval, the eval
    # that continued and the serve config.
    runs = runs_in(root, "pipeline-default")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    [continued] = [p for p in parents if p.info.run_id != parent.info.run_id]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == continued.info.run_id]
    assert sorted(r.info.status for r in kids) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]


def test_a_killed_pipeline_continues_at_the_stage_it_was_in(
    tiny_pipeline_root, tiny_cache, ray_cluster, tmp_path
):
    """`make pipeline` SIGKILLed while fine-tuning (a process of its own on the session's
    cluster); the rerun continues at finetune, in the same MLflow parent run."""
    root = tiny_pipeline_root
    before = manifests(root)
    parents_before = [r for r in runs_in(root, "pipeline-default") if _is_parent(r)]
    argv = tiny_pipeline(root, tiny_cache, listed("finetune", [*FINETUNE, "optim.lr=3e-3"]))
    env = os.environ | {"RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.pipeline", *argv],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not _started_again(manifest_path(root, "default", "finetune"), before):
                assert proc.poll() is None and time.monotonic() < deadline, "never fine-tuned"
                time.sleep(0.5)
            time.sleep(3)  # inside the stage: its job started
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed = manifests(root)
    assert killed["finetune"]["status"] == "running" and ran_since(before, killed) == ["finetune"]

    assert main(argv) == 0
    after = manifests(root)
    assert ran_since(killed, after) == ["finetune", "eval", "serve"]
    assert all(m["status"] == "finished" for m in after.values())
    # The killed invocation's parent run, continued and finished: one parent more in all.
    parents = [r for r in runs_in(root, "pipeline-default") if _is_parent(r)]
    assert len(parents) == len(parents_before) + 1
    assert {p.info.status for p in parents} == {"FINISHED"}


def _is_parent(run) -> bool:
    return "mlflow.parentRunId" not in run.data.tags


def _started_again(path, before: dict) -> bool:
    now = read_manifest(path)
    return (
        bool(now) and now["status"] == "running" and now["started"] != before["finetune"]["started"]
    )
