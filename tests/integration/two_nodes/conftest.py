"""The two-node cluster (two_node_cluster.py, two CPUs per node) of the cluster-operations
tests, stopped after the package's last test; the jobs spread their workers with the
multi-node placement (SPREAD). Each node has its own temp dir (where it keeps the copies it
fetches from the store) and its own credentials file for the session's S3 server, as two
machines sharing only a bucket would. The elastic test loses and regains a node, so it
starts a cluster of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from .two_node_cluster import TwoNodeCluster

NODES = ("head", "worker")


@pytest.fixture(scope="package")
def node_dirs(tmp_path_factory) -> dict[str, Path]:
    """Each node's own folder: its TMPDIR (``tmp/``) and its credentials file."""
    dirs = {name: tmp_path_factory.mktemp(f"{name}-node") for name in NODES}
    for directory in dirs.values():
        (directory / "tmp").mkdir()
    return dirs


@pytest.fixture(scope="package")
def two_node_cluster(s3_server, node_dirs):
    env = {
        name: {"TMPDIR": str(directory / "tmp"), **s3_server.profile_env(directory)}
        for name, directory in node_dirs.items()
    }
    cluster = TwoNodeCluster(cpus_per_node=2, node_env=env)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def two_nodes(two_node_cluster) -> str:
    """The shared cluster's Jobs API address."""
    return two_node_cluster.address


@pytest.fixture(scope="package")
def shared(tmp_path_factory) -> Path:
    """A folder every node sees (one machine: one filesystem), as NFS would be: the jobs'
    cache_dir where they share no bucket."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="package")
def train_job(two_nodes, shared, s3_server, tmp_path_factory):
    """The package's tiny pretraining on the bucket (bucket_job.py), run once."""
    from .bucket_job import run_train_job

    return run_train_job(two_nodes, shared, s3_server, tmp_path_factory.mktemp("submitter"))
