"""The benchmark code runs and measures something sensible: a tiny run of every path.
Correctness only; speed is never asserted here (it lives in `make bench`)."""

from __future__ import annotations

import local_cluster
import pytest
from tiny_runs import TINY_DATA

from bench import data_bench, datatrove_bench, run_all, serve_bench, train_bench

TINY = TINY_DATA  # prepared once for the session (conftest.py tiny_cache)


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_cache):
    return tiny_cache, str(tmp_path_factory.mktemp("bench") / "runs")


def test_data_prep_and_bare_loop(work):
    data = train_bench.data_prep(work[0], repeats=1, base=TINY)
    assert data["raw_tokens_per_s"] > 0 and data["pipeline_tokens_per_s"] > 0
    assert data["documents"] > 100
    bare = train_bench.bare_loop(work[0], steps=2, repeats=1, base=TINY)
    assert bare["tokens_per_s"] > 0 and 0 < bare["mfu"] < 1


@pytest.fixture(scope="module")
def sizes(tmp_path_factory) -> tuple[dict, dict]:
    """data_bench at 1 and 2 MiB, and each size's run and corpus, as `make bench` keeps
    them for the datatrove comparison."""
    runs: dict = {}
    return data_bench.compare([1, 2], tmp_path_factory.mktemp("data-bench"), runs), runs


def test_the_data_bench_measures_both_sizes(sizes):
    """A 1 and a 2 MiB synthetic corpus through `python -m cluster.prepare`: every figure is
    measured; the planted near copies are found (recall), nothing else is removed as one."""
    result = sizes[0]
    for size in ("small", "large"):
        r = result[size]
        assert r["wall_s"] > 0 and r["peak_rss_mib"] >= r["peak_pss_mib"] > 100
        assert r["pipeline_tokens_per_s"] > 0 and r["raw_tokens_per_s"] > 0
        assert r["pack_stage_tokens_per_s"] > r["pipeline_tokens_per_s"]
        stages = set(r["stage_seconds"])
        assert stages >= {"read_filter", "tokenizer", "pack_write"}
        assert "dedup" in stages or "near_dedup" in stages  # small or distributed path
        assert 0 <= r["false_removal_share"] <= 0.01
    assert result["large"]["recall"] >= 0.8
    assert len(data_bench.rows(result)) == 7


def test_zeroray_and_datatrove_prepare_one_corpus(sizes, tmp_path):
    """The 1 MiB synthetic corpus through `python -m cluster.prepare` (data_bench's run,
    reused as `make bench` does), then through datatrove's closest pipeline in its own uv
    environment (made by this test on a clean machine): both sides are measured, find the
    planted near copies, remove little else, write tokens."""
    result = datatrove_bench.compare(1, tmp_path, sizes[1][1])
    assert result["zeroray"]["wall_s"] == sizes[0]["small"]["wall_s"]  # the same run
    assert result["planted_near"] >= 5  # recall below is a share of something
    for name in ("zeroray", "datatrove"):
        side = result[name]
        assert side["wall_s"] > 0 and side["peak_rss_mib"] >= side["peak_pss_mib"] > 50, name
        assert side["recall"] >= 0.8 and side["false_removal_share"] <= 0.01, name
        assert 0.8 * result["documents"] < side["documents_kept"] < result["documents"], name
        assert side["tokens"] > side["documents_kept"], name
    steps = ("exact_signatures", "exact_find", "filter", "minhash_buckets", "minhash_cluster")
    assert set(result["datatrove"]["stage_seconds"]) == {*steps, "tokenize"}
    assert len(datatrove_bench.rows(result)) == 7


def test_full_stack_and_serving_paths(ray_cluster, work):
    stack = train_bench.full_stack(work[0], work[1], "z2", 25, ["deepspeed=zero2"], base=TINY)
    assert stack["tokens_per_s"] > 0 and 0 < stack["mfu"] < 1
    assert stack["startup_s"]["total"] > stack["startup_s"]["engine_build"] > 0
    export = f"{work[1]}/bench/z2/export"
    ray_cluster.shutdown()  # the serving benchmark starts (and stops) its own cluster
    try:
        result = serve_bench.compare(export, [2], [4])
    finally:
        local_cluster.start()  # for the tests after this one
    assert result["baseline"]["4"]["tokens_per_s"] > 0
    assert [load["key"] for load in result["loads"]] == ["stream-4-c2", "whole-4-c2"]
    # Every side answered the same loads through the openai client: zeroray at the port
    # users call (its ingress) and at its replica's own URL, and the peer.
    sides = {
        "port": result["zeroray"]["port"],
        "replica": result["zeroray"]["replica"],
        "peer": result["peer"]["cases"],
    }
    for side, figures in sides.items():
        streamed, whole = figures["stream-4-c2"], figures["whole-4-c2"]
        for level in (streamed, whole):
            assert level["requests"] == 64 and level["tokens_per_s"] > 0, side
            assert 0 < level["p50_s"] <= level["p99_s"], side
        assert 0 < streamed["ttft_p50_s"] <= streamed["p50_s"], side
        assert whole["ttft_p50_s"] is None, side
    assert result["zeroray"]["peak_rss_mib"] > 50 and result["peer"]["peak_rss_mib"] > 50
    rows = run_all.serve_rows(result)
    assert all(value > 0 and baseline > 0 for _, value, baseline, _ in rows)


def test_headline_runs_zeroray_and_both_peers(ray_cluster, tmp_path, monkeypatch):
    """`python -m cluster.train`, HF Trainer + DeepSpeed and DDP under torchrun, each in its
    own processes on the same prepared data: every side trains and is timed."""
    # 800 documents of the embedded corpus instead of all of it (a correctness check, not a
    # figure), prepared by the bench's `python -m cluster.prepare` on the session's cluster,
    # as on a running one (RAY_ADDRESS), instead of on a Ray of its own (8-10 s more): the
    # headline then finds it prepared, as `make bench` does for its second side.
    data, cache = ("data.max_documents=800",), str(tmp_path / "cache")
    with monkeypatch.context() as env:
        env.setenv("RAY_ADDRESS", ray_cluster.get_runtime_context().gcs_address)
        train_bench.prepared(cache, [*train_bench.MODEL, *data])
    ray_cluster.shutdown()  # zeroray's side starts its own local cluster, as `make train` does
    try:
        # 41 steps: 30 of warm-up, one window of 10 measured, the last.
        result = train_bench.headline(cache, str(tmp_path), 41, data)
    finally:
        local_cluster.start()
    assert set(result) == {"zeroray", "hf_deepspeed", "ddp"}
    for side in result.values():
        assert side["tokens_per_s"] > 0
        assert 0 < side["first_step_s"] < side["wall_s"]
