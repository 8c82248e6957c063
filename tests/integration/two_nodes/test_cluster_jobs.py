"""Cluster operations on a real two-node Ray cluster (conftest.py): jobs submitted
through the Ray Jobs API by the code path of `make submit` (`python -m cluster.ops.submit`),
and a tiny pretraining whose only shared store is the session's S3 server: its data is
prepared into the bucket by tasks on both nodes, its two workers (one per node) each fetch
it onto their own node, and the checkpoints and the export go to the bucket.

One machine cannot hide one node's files from the other, so "no shared filesystem" is
checked by where things are: the data in the bucket and in each node's own temp dir (fetched
there, checked against its manifest), none in the driver's cache_dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pyarrow.fs as pafs
import pytest
from helpers.s3_server import free_port
from tiny_runs import TINY_MODEL
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.ops.submit import auth_headers
from rundir.node_cache import DONE, EXPORT_MANIFEST, fetch_export
from rundir.store import open_location

from .conftest import NODES
from .two_node_cluster import alive_nodes

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY = [  # tests/integration/test_pretrain.py's tiny run, shortened to 20 steps
    "data.max_documents=800",
    *TINY_MODEL,
    "trainer.micro_batch_size=8",
    "trainer.max_steps=20",
    "trainer.log_every_steps=5",
    "trainer.eval_every_steps=5",
    "trainer.eval_batches=4",
    "trainer.checkpoint_every_steps=5",
    "optim.lr=3e-3",
    "optim.warmup_steps=5",
    "num_samples=1",
]
# The multi-node group as a user would give it, on CPUs: one worker per node.
MULTI_NODE_CPU = [
    "scaling=multi-node",
    "scaling.num_nodes=2",
    "scaling.use_gpu=false",
    "scaling.gpus_per_node=0",
    "scaling.num_workers=2",
    "scaling.cpus_per_worker=1",
    "scaling.peak_flops_per_device=null",
]


class TrainJob(NamedTuple):
    proc: subprocess.CompletedProcess  # `make submit train ...`, following the job
    job_id: str
    killed_pid: int  # the training worker SIGKILLed on the worker node mid-run


@pytest.fixture(scope="module")
def two_nodes(two_node_cluster) -> str:
    """The shared cluster's Jobs API address."""
    return two_node_cluster.address


def submit_cli(
    address: str, *args: str, timeout: float = 400, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`make submit` / `make job-*` minus make: the same module, a real process."""
    return subprocess.run(
        [sys.executable, "-m", "cluster.ops.submit", *args, "--address", address],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=env,
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Storage every node sees (one machine: one filesystem), as NFS would be."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def train_job(two_nodes, shared, s3_server, tmp_path_factory) -> TrainJob:
    """The job, followed as `make submit` follows it, and the worker killed under it."""
    # The submitting machine's own credentials file; make submit ships only the settings.
    env = {**os.environ, **s3_server.profile_env(tmp_path_factory.mktemp("submitter"))}
    done: list[subprocess.CompletedProcess] = []
    follow = threading.Thread(
        target=lambda: done.append(
            submit_cli(
                two_nodes,
                "train",
                *TINY,
                *MULTI_NODE_CPU,
                # The distributed preparation, whose read tasks spread over the nodes (800
                # documents would otherwise take the small path: a few read tasks, maybe all
                # on one node).
                "data.small_corpus_mib=0",
                "experiment=cluster",
                "run_name=two-nodes",
                f"output_dir={s3_server.uri('runs')}",
                f"prepared_dir={s3_server.uri('prepared')}",
                f"cache_dir={shared}/cache",  # the driver's own: its mirror of the run, no data
                env=env,
            )
        )
    )
    follow.start()
    killed = _kill_a_worker_after_the_first_checkpoint(two_nodes, s3_server)
    follow.join(timeout=600)
    [proc] = done
    job_id = next(
        (w for line in proc.stdout.splitlines() for w in line.split() if w.startswith("raysub")),
        None,
    )
    return TrainJob(proc, (job_id or "").rstrip(":"), killed)


def _kill_a_worker_after_the_first_checkpoint(address: str, s3) -> int:
    """SIGKILLs the training worker on the worker node once Ray Train has registered the
    step-5 checkpoint in the bucket (before that, recovery would start from scratch and
    prove less); its pid."""
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    host, port = s3.endpoint.split("://")[1].split(":")
    bucket = pafs.S3FileSystem(
        access_key=s3.access_key, secret_key=s3.secret_key, region="us-east-1",
        endpoint_override=f"{host}:{port}", scheme="http",
    )  # fmt: skip
    snapshot = f"{s3.bucket}/runs/cluster/two-nodes/checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 400
    while b"step_0000005" not in _read_or_empty(bucket, snapshot):
        assert time.monotonic() < deadline, "no checkpoint was registered in the bucket"
        time.sleep(0.1)
    [head] = [n.node_id for n in alive_nodes(address) if n.is_head_node]
    workers = StateApiClient(address, headers=auth_headers()).list(
        StateResource.ACTORS,
        options=ListApiOptions(
            filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], detail=True
        ),
        raise_on_missing_output=False,
    )
    [victim] = [w for w in workers if w.node_id != head]
    os.kill(victim.pid, signal.SIGKILL)  # one machine: the worker node's process is ours
    return victim.pid


def _read_or_empty(fs: pafs.FileSystem, path: str) -> bytes:
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except OSError:
        return b""


def test_job_is_followed_to_success(train_job):
    proc, job_id = train_job.proc, train_job.job_id
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert job_id.startswith("raysubmit_")
    assert "/#/jobs/raysubmit_" in proc.stdout  # the dashboard URL is printed
    assert "=== zeroray run summary ===" in proc.stdout  # the job's own logs were followed
    assert f"{job_id} SUCCEEDED" in proc.stdout


def test_workers_ran_on_two_different_nodes(two_nodes, train_job):
    from ray.job_submission import JobSubmissionClient
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    job_id = train_job.job_id
    ray_job_id = JobSubmissionClient(two_nodes, headers=auth_headers()).get_job_info(job_id).job_id
    state = StateApiClient(two_nodes, headers=auth_headers())
    workers = state.list(
        StateResource.ACTORS,
        options=ListApiOptions(filters=[("class_name", "=", "RayTrainWorker")], detail=True),
        raise_on_missing_output=False,
    )
    nodes = {w.node_id for w in workers if w.job_id == ray_job_id}
    assert len(nodes) == 2, workers
    assert nodes == {n.node_id for n in alive_nodes(two_nodes)}


def test_checkpoints_and_export_are_in_the_bucket(train_job, s3_env, tmp_path):
    assert train_job.proc.returncode == 0
    run = open_location(s3_env.uri("runs", "cluster", "two-nodes"))
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
    run = open_location(s3_env.uri("runs", "cluster", "two-nodes"))
    rows = [json.loads(line) for line in run.child("metrics.jsonl").read_text().splitlines()]
    starts = [r["started_at_step"] for r in rows if "started_at_step" in r]
    assert starts[0] == 0 and starts[-1] >= 5, starts  # the restarted group took over there
    assert [r["step"] for r in rows if "loss" in r] == [5, 10, 15, 20]


def test_data_was_prepared_on_both_nodes_into_the_bucket(train_job, s3_env, shared, node_dirs):
    """The job's data preparation is a Ray Data pipeline: by Ray Data's own stats, its read
    tasks (47 here) ran on both nodes, writing to the bucket. (Not its filter: after the
    800-document limit it is 4 tasks, which Ray places where their input blocks are, on one
    node or both: CI has seen each.) Each node's worker trained on its own node's copy,
    fetched from the bucket; the driver's cache_dir holds none."""
    assert train_job.proc.returncode == 0
    [prepared] = open_location(s3_env.uri("prepared")).dirs("data-*")
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


def test_status_and_logs_of_a_finished_job(two_nodes, train_job):
    job_id = train_job.job_id
    status = submit_cli(two_nodes, "--status", job_id, timeout=60)
    assert status.returncode == 0 and f"{job_id}: SUCCEEDED (exit code 0)" in status.stdout
    logs = submit_cli(two_nodes, "--logs", job_id, timeout=60)
    assert "=== zeroray run summary ===" in logs.stdout
    listing = submit_cli(two_nodes, "--cluster-status", timeout=60)
    assert "2 node(s) alive" in listing.stdout and job_id in listing.stdout


def test_failing_job_exit_code_reaches_the_caller(two_nodes, shared):
    # Valid config, so it is submitted; the glob matches nothing on the cluster.
    proc = submit_cli(
        two_nodes,
        "train",
        "data=text-files",
        f"data.paths=[{shared}/nowhere/*.txt]",
        f"output_dir={shared}/runs",
        f"cache_dir={shared}/cache",
        timeout=120,
    )
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]  # cluster.train's own code
    assert "error: data.paths" in proc.stdout and "matches no file" in proc.stdout
    assert "FAILED" in proc.stdout


def test_stop_a_running_job(two_nodes, shared):
    proc = submit_cli(
        two_nodes,
        "train",
        *TINY,
        "trainer.max_steps=100000",
        f"output_dir={shared}/runs",
        f"cache_dir={shared}/cache",
        "--no-follow",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split("submitted ", 1)[1].split(":", 1)[0]
    assert submit_cli(two_nodes, "--stop", job_id, timeout=60).returncode == 0
    deadline = time.monotonic() + 60
    while (status := submit_cli(two_nodes, "--status", job_id, timeout=60)).returncode == 0:
        assert time.monotonic() < deadline, status.stdout
        time.sleep(1)
    assert f"{job_id}: STOPPED" in status.stdout and status.returncode == 1


def test_unknown_job_id_is_one_line_and_exit_2(two_nodes):
    proc = submit_cli(two_nodes, "--status", "raysubmit_doesnotexist", timeout=60)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ID='raysubmit_doesnotexist'"), lines


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
    export = s3_server.uri("runs", "cluster", "two-nodes", "export")
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
