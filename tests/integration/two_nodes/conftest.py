"""One two-node cluster (two_node_cluster.py) for the cluster-operations and elastic tests:
two CPUs per node. The elastic run asks two CPUs per worker, so each node holds one of its
workers; the jobs tests spread theirs with the multi-node placement (SPREAD)."""

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
