"""The package's tiny pretraining (bucket_job.py) on two nodes whose only shared store is the
session's S3 server: its data prepared into the bucket by tasks on both nodes, its two
workers (one per node) each on their own node's copy, a worker SIGKILLed after the first
checkpoint recovering from the bucket, `resume=latest` on one worker continuing it from the
bucket, and the export served from the bucket by a replica on each node. No credential value
lands anywhere.

One machine cannot hide one node's files from the other, so "no shared filesystem" is
checked by where things are: the data in the bucket and in each node's own temp dir (fetched
there, checked against its manifest), none in the driver's cache_dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.s3_server import free_port
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.ops.submit import auth_headers
from rundir.node_cache import DONE, EXPORT_MANIFEST, fetch_export
from rundir.store import open_location

from .bucket_job import PREFIX, REPO_ROOT, TINY, submit_cli
from .conftest import NODES


def test_checkpoints_and_export_are_in_the_bucket(train_job, s3_env, tmp_path):
    assert train_job.proc.returncode == 0
    run = open_location(s3_env.uri(PREFIX, "runs", "cluster", "two-nodes"))
    checkpoints = [d.name for d in run.dirs("step_*")]
    assert checkpoints == ["step_0000015", "step_0000020"]  # the newest two are kept
    shards = run.child("step_0000020", "deepspeed").entries("*optim_states.pt")
    assert len(shards) == 2, shards  # both ranks' shards, written from two nodes
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "loss.png"):
        assert run.child(name).is_file(), name
    export = fetch_export(run.child("export").uri, tmp_path)  # checked against its manifest
    model = AutoModelForCausalLM.from_pretrained(export)
    tokenizer = AutoTokenizer.from_pretrained(export)
    out = model.generate(**tokenizer("Return the", return_tensors="pt"), max_new_tokens=4)
    assert tokenizer.decode(out[0], skip_special_tokens=True).startswith("Return the")


def test_the_killed_worker_recovered_from_the_bucket(two_nodes, train_job, s3_env):
    """After the worker on the worker node was SIGKILLed, Ray Train started a new group,
    which continued from a checkpoint in the bucket (no node has another copy), and rank 0,
    wherever it ran, logged every step once, its history taken from the bucket."""
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    assert train_job.proc.returncode == 0
    workers = StateApiClient(two_nodes, headers=auth_headers()).list(
        StateResource.ACTORS,
        options=ListApiOptions(filters=[("class_name", "=", "RayTrainWorker")], detail=True),
        raise_on_missing_output=False,
    )
    assert any(w.pid == train_job.killed_pid and w.state == "DEAD" for w in workers)
    run = open_location(s3_env.uri(PREFIX, "runs", "cluster", "two-nodes"))
    rows = [json.loads(line) for line in run.child("metrics.jsonl").read_text().splitlines()]
    starts = [r["started_at_step"] for r in rows if "started_at_step" in r]
    assert starts[0] == 0 and starts[-1] >= 5, starts  # the restarted group took over there
    assert [r["step"] for r in rows if "loss" in r] == [5, 10, 15, 20]


def test_resume_latest_on_one_worker_continues_from_the_bucket(
    two_nodes, train_job, s3_env, shared, tmp_path
):
    """A second job, `resume=latest` with one worker instead of two: it finds the newest
    checkpoint in the bucket, the worker's node fetches it, the global batch is kept by
    accumulating twice, and the run continues from step 20 with the history carried."""
    assert train_job.proc.returncode == 0
    # The submitting machine's own credentials file (this process holds the keys to read
    # the bucket: they stay here).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = submit_cli(
        two_nodes, "train", *TINY, "trainer.max_steps=25", "scaling.num_workers=1",
        "resume=latest", "experiment=cluster", "run_name=one-worker",
        f"output_dir={s3_env.uri(PREFIX, 'runs')}",
        f"prepared_dir={s3_env.uri(PREFIX, 'prepared')}", f"cache_dir={shared}/cache",
        env=env | s3_env.profile_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run = open_location(s3_env.uri(PREFIX, "runs", "cluster", "one-worker"))
    assert [d.name for d in run.dirs("step_*")] == ["step_0000025"]
    rows = [json.loads(line) for line in run.child("metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [5, 10, 15, 20, 25]
    [resumed] = [r for r in rows if r.get("started_at_step") == 20]
    assert resumed["workers"] == 1
    assert run.child("export", EXPORT_MANIFEST).is_file()


def test_data_was_prepared_on_both_nodes_into_the_bucket(train_job, s3_env, shared, node_dirs):
    """The job's data preparation is a Ray Data pipeline: by Ray Data's own stats, its read
    tasks (47 here) ran on both nodes, writing to the bucket. (Not its filter: after the
    800-document limit it is 4 tasks, which Ray places where their input blocks are, on one
    node or both: CI has seen each.) Each node's worker trained on its own node's copy,
    fetched from the bucket; the driver's cache_dir holds none."""
    assert train_job.proc.returncode == 0
    [prepared] = open_location(s3_env.uri(PREFIX, "prepared")).dirs("data-*")
    stats = prepared.child("ray_data_stats.txt").read_text()
    block = next(b for b in stats.split("Operator ")[1:] if "FlatMap(item_rows)" in b)
    assert "; 2 nodes used" in block, block
    assert prepared.child("dataset", "train").files("shard-*.parquet")
    assert prepared.child("data_report.json").is_file()
    assert not list((shared / "cache").glob("data-*"))
    for node in NODES:
        copies = node_dirs[node] / "tmp" / f"zeroray-{os.getuid()}" / "prepared"
        [done] = copies.glob(f"*/{DONE}")
        assert done.read_text().strip() == prepared.uri, node
        copy = done.parent / prepared.name  # beside it, datasets' Arrow cache of the shards
        manifest = json.loads(prepared.child(EXPORT_MANIFEST).read_text())["files"]
        assert set(manifest) <= {p.relative_to(copy).as_posix() for p in copy.rglob("*")}


def test_no_credential_value_in_any_file_or_log(
    two_node_cluster, train_job, s3_env, shared, node_dirs
):
    """The keys live in each node's credentials file only: not in the bucket, nor in any
    file the job wrote on either node, nor in Ray's logs of either node."""
    assert train_job.proc.returncode == 0
    secrets = [s3_env.access_key.encode(), s3_env.secret_key.encode()]
    bucket = open_location(s3_env.uri())
    objects = [i.path for i in bucket.entries(recursive=True) if i.size is not None]
    files = [(p, bucket.fs.open_input_stream(p).read()) for p in objects]
    roots = [shared, *(d / "tmp" for d in node_dirs.values()), Path(two_node_cluster.temp_dir)]
    local = [p for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    files += [(str(p), p.read_bytes()) for p in local]
    for name, data in files:
        assert not any(s in data for s in secrets), f"a credential leaked into {name}"
    assert not any(s.decode() in train_job.proc.stdout + train_job.proc.stderr for s in secrets)
    assert len(objects) > 20 and any("/logs/" in str(p) for p in local)  # the scan saw them


def test_the_export_in_the_bucket_is_served_by_a_replica_on_each_node(
    two_node_cluster, train_job, s3_server, node_dirs, tmp_path
):
    """`make serve ARGS="checkpoint=s3://..."` against the cluster, two replicas: Serve
    spreads them over the nodes, so one runs on the node that did not write the export. Each
    fetches it from the bucket onto its own node, and both answer the `openai` client."""
    from openai import OpenAI

    assert train_job.proc.returncode == 0
    export = s3_server.uri(PREFIX, "runs", "cluster", "two-nodes", "export")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **s3_server.profile_env(tmp_path),
        "RAY_ADDRESS": f"127.0.0.1:{two_node_cluster.gcs}",
        "RAY_AUTH_MODE": "token",  # the cluster's mode (cluster/ops/local_head.py node_env)
    }
    replicas = ["serve.autoscaling.min_replicas=2", "serve.autoscaling.max_replicas=2"]
    serve = subprocess.run(
        [sys.executable, "-m", "cluster.serve", f"checkpoint={export}", "blocking=false",
         f"port={port}", *replicas],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    try:
        assert serve.returncode == 0, (serve.stdout + serve.stderr)[-4000:]
        for node in NODES:
            copies = node_dirs[node] / "tmp" / f"zeroray-{os.getuid()}" / "exports"
            [done] = copies.glob(f"*/{DONE}")
            assert done.read_text().strip() == export, node
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        [model] = [m.id for m in client.models.list().data]
        for _ in range(4):  # balanced over both replicas by the ingress
            answer = client.completions.create(model=model, prompt="def ", max_tokens=4)
            assert answer.usage.completion_tokens >= 1
    finally:
        shutdown = "import ray; from ray import serve; ray.init(); serve.shutdown()"
        subprocess.run([sys.executable, "-c", shutdown], env=env, timeout=120, cwd=REPO_ROOT)
