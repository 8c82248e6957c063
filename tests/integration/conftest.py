"""One local Ray cluster for the whole integration tier (starting one costs ~5-10 s)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def serve_cluster():
    """A local cluster with `make serve`'s ingress (the defaults of ServeJobConfig: the
    environment every Serve process reads at start-up), for a module's Serve tests. The
    session's cluster, when one is running, is stopped for the module and started again
    afterwards."""
    import ray
    from serve_apps import free_port

    from cluster.serve import ingress_env
    from schemas.jobs import ServeJobConfig

    default = ServeJobConfig()
    env = ingress_env(default.ingress, default.throughput_optimized)
    # A replica leaving waits 1 s, not 30, for load balancers elsewhere to forget it (there
    # are none here); HAProxy's stats and metrics ports (8404, 9101 by default) are free ones,
    # so that test sessions beside this one do not collide.
    env |= {
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }
    was_running = ray.is_initialized()
    ray.shutdown()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, logging_level="WARNING")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    yield env
    ray.shutdown()
    if was_running:
        ray.init(num_cpus=2, logging_level="WARNING")


@pytest.fixture(scope="session")
def tiny_cache(ray_cluster, tmp_path_factory) -> str:
    """The tiny runs' data (tiny_runs.TINY_DATA) prepared once for the session, the way
    `make prepare` does; every run of it afterwards, in any module, reads the cache."""
    from tiny_runs import prepare_tiny_data

    cache = str(tmp_path_factory.mktemp("tiny-cache"))
    first, again = prepare_tiny_data(cache), prepare_tiny_data(cache)
    assert not first.cache_hit and again.cache_hit  # prepared once, then found
    assert again.dataset_dir == first.dataset_dir
    return cache


@pytest.fixture(scope="session")
def reference_run(tiny_cache, tmp_path_factory):
    """The session's one REFERENCE_RUN (tiny_runs.py): its run directory."""
    from tiny_runs import REFERENCE_RUN

    from cluster.train import main

    runs = tmp_path_factory.mktemp("reference") / "runs"
    overrides = [*REFERENCE_RUN, "run_name=reference", f"output_dir={runs}"]
    assert main([*overrides, f"cache_dir={tiny_cache}"]) == 0
    return runs / "ref" / "reference"


@pytest.fixture(scope="session")
def resume_chains(tiny_cache, tmp_path_factory):
    """The session's resharding chains (resume_chains.py), each run trained on first use."""
    from resume_chains import ResumeChains

    return ResumeChains(tmp_path_factory.mktemp("world") / "runs", tiny_cache)


@pytest.fixture(scope="session")
def tiny_pipeline_root(tiny_cache, tmp_path_factory):
    """The session's tiny `make pipeline` (tiny_pipeline.py), run once, tracked in MLflow:
    its output_dir (the stages' manifests under pipelines/default/, the store mlflow.db)."""
    from tiny_pipeline import tiny_pipeline

    from cluster.pipeline import main

    root = tmp_path_factory.mktemp("pipeline") / "runs"
    assert main(tiny_pipeline(root, tiny_cache)) == 0
    return root


def pytest_collection_modifyitems(items):
    # Everything in this folder needs the cluster: mark it so `-m "not ray"` skips it.
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.ray)
