"""One local Ray cluster for the whole integration tier (starting one costs ~5-10 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, logging_level="WARNING")
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    # Everything in this folder needs the cluster: mark it so `-m "not ray"` skips it.
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.ray)
