"""The two-node cluster (two_node_cluster.py, two CPUs per node) of the cluster-operations
tests, stopped after the package's last test; the jobs spread their workers with the
multi-node placement (SPREAD). The elastic test loses and regains a node, so it starts a
cluster of its own."""

from __future__ import annotations

import pytest

from .two_node_cluster import TwoNodeCluster


@pytest.fixture(scope="package")
def two_node_cluster():
    cluster = TwoNodeCluster(cpus_per_node=2)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
