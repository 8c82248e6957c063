"""The two-node tests' job: a tiny pretraining submitted through the code path of `make
submit` (`python -m cluster.ops.submit`), one worker per node, whose only shared store is
the session's S3 server (data prepared into it, checkpoints and the export written to it),
and a training worker SIGKILLed under it after its first checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pyarrow.fs as pafs
from tiny_runs import TINY_MODEL

from cluster.ops.submit import auth_headers

from .two_node_cluster import alive_nodes

REPO_ROOT = Path(__file__).resolve().parents[3]
# The job's own folder in the session's bucket: the S3 run test prepares the same tiny data
# there (the same cache key), which this job would otherwise find instead of preparing it.
PREFIX = "two-nodes"
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


def run_train_job(two_nodes: str, shared: Path, s3_server, submitter: Path) -> TrainJob:
    """The job, followed as `make submit` follows it, and the worker killed under it."""
    # The submitting machine's own credentials file; make submit ships only the settings.
    env = {**os.environ, **s3_server.profile_env(submitter)}
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
                f"output_dir={s3_server.uri(PREFIX, 'runs')}",
                f"prepared_dir={s3_server.uri(PREFIX, 'prepared')}",
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
    snapshot = f"{s3.bucket}/{PREFIX}/runs/cluster/two-nodes/checkpoint_manager_snapshot.json"
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
