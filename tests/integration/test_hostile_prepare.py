"""`python -m cluster.prepare` (the `make prepare` code path), on a fresh local Ray, over a
folder where a good file sits beside hostile ones: a JSON line nested 100,000 deep, a
521-byte Parquet dictionary bomb (20 GB decoded) and one 200 MB line. It exits 0 with each
counted as a bad record, every Ray worker and the whole process tree (driver, Ray's daemons
and workers) under stated memory bounds. Before the readers were bounded the same folder ended in
a traceback after Ray Data's tasks were OOM-killed again and again on a 24 GiB machine."""

from __future__ import annotations

import json
import os
import threading
import time

import psutil
from hostile_files import dictionary_bomb, long_line

from bench.data_bench import _tree_memory, start_prepare

# Bounds, from what was measured on the 2-CPU development machine (load average ~15):
# - the largest Ray worker's peak RSS (a reading task): 261 MiB measured. The readers before
#   this bound read the 200 MB line whole: on the good file and that line alone (the part of
#   this folder they survive) a worker peaked at 571 MiB or more (sampled every 0.2 s). One
#   decoded batch of the bomb is 1 GiB, the whole bomb 20 GB.
# - the whole tree's peak PSS (shared pages split between the processes that map them):
#   1.6 GiB measured (3.1 GiB RSS), 1.56 GiB for the good file alone. Ray starts a worker per
#   CPU, so the bound grows with the CPUs.
WORKER_RSS_BOUND_MIB = 512
TREE_PSS_BOUND_MIB = 1024 + 512 * (os.cpu_count() or 1)


def _worker_rss(root: psutil.Process) -> int:
    """The largest RSS among the tree's Ray worker processes (titled ``ray::...``)."""
    largest = 0
    for p in root.children(recursive=True):
        try:
            if p.cmdline() and p.cmdline()[0].startswith("ray::"):
                largest = max(largest, p.memory_info().rss)
        except psutil.Error:
            continue
    return largest


def test_make_prepare_counts_hostile_files_within_a_memory_bound(tmp_path, pydoc_docs):
    folder = tmp_path / "data"
    folder.mkdir()
    with (folder / "good.jsonl").open("w") as f:
        for doc in pydoc_docs[:150]:
            f.write(json.dumps({"text": doc.text}) + "\n")
    (folder / "nested.jsonl").write_bytes(b"[" * 100_000 + b"\n")
    dictionary_bomb(folder / "bomb.parquet")
    big = long_line(folder / "big.jsonl", 200 * 2**20)
    try:
        proc = start_prepare(
            [str(folder / "*")],
            tmp_path / "cache",
            # Small and without deduplication or decontamination: this is about reading.
            [
                *("trainer.seq_len=32", "tokenizer.vocab_size=400", "data.max_bad_fraction=0.05"),
                *("data.dedup.exact=false", "data.dedup.near=false", "data.decontam.enabled=false"),
            ],
        )
        root, peak = psutil.Process(proc.pid), [0, 0, 0]  # tree RSS, tree PSS, worker RSS

        def sample() -> None:
            while proc.poll() is None:
                peak[:] = map(max, peak, [*_tree_memory(root), _worker_rss(root)])
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate(timeout=300)
        sampler.join()
    finally:
        big.unlink()
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    [prepared] = (tmp_path / "cache").glob("data-*")
    bad = json.loads((prepared / "stats.json").read_text())["bad_records"]
    assert bad["by_reason"] == {
        "nested too deeply": 1,
        "Parquet expands over 100x its size": 1,
        "too_large": 1,
    }
    assert bad["first"]["too_large"] == [f"{folder / 'big.jsonl'}:1"]
    rss, pss, worker = (round(b / 2**20) for b in peak)
    print(f"peak of the process tree: RSS {rss} MiB, PSS {pss} MiB; largest worker {worker} MiB")
    assert 0 < worker < WORKER_RSS_BOUND_MIB
    assert 0 < pss < TREE_PSS_BOUND_MIB
