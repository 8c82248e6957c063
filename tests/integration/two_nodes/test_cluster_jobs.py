"""Cluster operations on a real two-node Ray cluster (conftest.py): jobs submitted through
the Ray Jobs API by the code path of `make submit` (`python -m cluster.ops.submit`), followed,
listed, stopped and refused; the package's tiny pretraining (bucket_job.py) spread its two
workers over both nodes."""

from __future__ import annotations

import time

from cluster.ops.submit import auth_headers

from .bucket_job import TINY, submit_cli
from .two_node_cluster import alive_nodes


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
