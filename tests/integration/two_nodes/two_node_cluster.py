"""A real two-node Ray cluster on this machine: two `ray start` processes (a head and a
worker node), each with its own ports and temp dir, started and stopped the way
`make cluster-up` does (cluster/ops/local_head.py). The worker node can be stopped and
started again under a running job: a node lost and returned.

The test process never calls ray.init on it, so the session's in-process `ray_cluster`
fixture is neither needed nor disturbed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from cluster.ops.local_head import start_node, stop_node, wait_for_jobs_api
from cluster.ops.submit import auth_headers


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def alive_nodes(address: str) -> list:
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(address, headers=auth_headers())
    options = ListApiOptions(filters=[("state", "=", "ALIVE")])
    return client.list(StateResource.NODES, options=options, raise_on_missing_output=False)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # start_new_session made pid its group's id
    except ProcessLookupError:
        pass


class TwoNodeCluster:
    """``address`` is the Jobs API (dashboard) URL once ``start`` returns. ``node_env``
    holds what each node ("head", "worker") adds to its environment: its own temp dir and
    store credentials, as separate machines would have."""

    def __init__(self, cpus_per_node: int = 2, node_env: dict[str, dict] | None = None):
        self.cpus = cpus_per_node
        self.node_env = node_env or {}
        self.temp_dir = tempfile.mkdtemp(prefix="zr-", dir="/tmp")  # short: socket paths
        self.logs = Path(self.temp_dir) / "logs-zeroray"
        self.head = self.worker = None
        self.gcs, self.dashboard, self.client = _free_ports(3)
        self.address = f"http://127.0.0.1:{self.dashboard}"
        self._worker_starts = 0

    def _node_flags(self) -> list[str]:
        # Every port a node binds, chosen free: another Ray instance may hold Ray's defaults.
        agent, agent_grpc, metrics, runtime_env = _free_ports(4)
        return [
            f"--num-cpus={self.cpus}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
        ]

    def start(self) -> TwoNodeCluster:
        head_flags = [
            "--head",
            f"--port={self.gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard}",
            f"--ray-client-server-port={self.client}",
            f"--temp-dir={self.temp_dir}",
            *self._node_flags(),
        ]
        self.head = start_node(head_flags, self.logs / "head.log", self.node_env.get("head"))
        wait_for_jobs_api(self.address, self.head)
        self.start_worker()
        return self

    def start_worker(self, tries: int = 3) -> None:
        """The worker node joins (again); returns once the cluster sees two nodes.

        `ray start` gives a raylet a fixed 30 s to register with the GCS, and on two busy
        cores a node joining under a running job has missed it (CI, fb9bb0b): a node whose
        start failed is cleared and started again, as an autoscaler relaunches one."""
        for attempt in range(1, tries + 1):
            self._worker_starts += 1
            # Its own temp dir (a new one per start): two nodes on one machine would
            # otherwise share one runtime_env cache, and the worker node's clean-up would
            # delete the job's working directory.
            flags = [
                f"--address=127.0.0.1:{self.gcs}",
                f"--temp-dir={self.temp_dir}/w{self._worker_starts}",
                *self._node_flags(),
            ]
            log = self.logs / f"worker{self._worker_starts}.log"
            self.worker = start_node(flags, log, self.node_env.get("worker"))
            deadline = time.monotonic() + 90
            while len(alive_nodes(self.address)) < 2:
                if self.worker.poll() is not None:
                    break
                assert time.monotonic() < deadline, "the worker node never joined"
                time.sleep(1)
            else:
                return
            _kill_group(self.worker.pid)  # what the failed start left running
            assert attempt < tries, log.read_text()[-3000:]

    def stop_worker(self) -> None:
        """Every Ray process of the worker node stops; returns once the head has seen it."""
        stop_node(self.worker.pid)
        deadline = time.monotonic() + 90
        while len(alive_nodes(self.address)) > 1:
            assert time.monotonic() < deadline, "the head still lists the stopped node"
            time.sleep(0.5)

    def stop(self) -> None:
        # The worker first: a node drains through the head's GCS.
        for proc in (self.worker, self.head):
            if proc is not None:
                stop_node(proc.pid)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
