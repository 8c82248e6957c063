"""One local Ray cluster for the whole integration tier (starting one costs ~5-10 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's local cluster, its processes started with `make serve`'s ingress
    settings (local_cluster.py), so the Serve tests run behind the ingress users get."""
    import local_cluster
    import ray

    local_cluster.start()
    yield ray
    ray.shutdown()


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
