"""Data preparation at two corpus sizes, side by side in one run: the whole Ray Data
pipeline (`python -m cluster.prepare` on a fresh local Ray, as a user runs it) on the
synthetic corpus of bench/synthetic_corpus.py at a small and a 10x larger size.

Per size: wall time; peak memory summed over every process of the run (the driver, Ray's
own processes and its workers: the sum of PSS, and of RSS, sampled every 0.5 s); tokens/s
of the whole preparation, of its tokenize + pack + write stage, and of a raw `tokenizers`
encode_batch over the same text on the same cores; near-duplicate recall on the planted
copies and false removals of the rest; each stage's wall time. Decontamination is off (see
PREPARE).

    python -m bench.data_bench [--sizes 100 1024] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.synthetic_corpus import write_corpus

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) summed over the process tree. RSS counts a shared page once per process
    that maps it (the object store's pages, torch's libraries in every Ray worker); PSS
    splits it between them, so its sum is the memory the run really holds."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return rss, pss


def start_prepare(paths: list[str], cache: Path, extra: list[str] = ()) -> subprocess.Popen:
    """`python -m cluster.prepare` on ``paths`` on a fresh local Ray, output piped."""
    overrides = [
        "data=text-files",
        f"data.paths=[{','.join(paths)}]",
        f"cache_dir={cache}",
        "data.max_bad_fraction=0.5",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        [sys.executable, "-m", "cluster.prepare", *overrides],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_measured(proc: subprocess.Popen) -> dict:
    """Waits for ``proc`` (output piped, text): its wall time from now, its peak memory summed
    over its process tree (the sum of RSS, and of PSS), its output; raises if it failed."""
    started = time.perf_counter()
    peak, root = [0, 0], psutil.Process(proc.pid)

    def sample() -> None:
        while proc.poll() is None:
            try:
                peak[:] = map(max, peak, _tree_memory(root))
            except psutil.Error:  # it ended between poll() and the read
                break
            time.sleep(0.5)  # reading every process's smaps costs a little CPU itself

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(out[-3000:])
    return {"wall_s": wall, "peak_rss_bytes": peak[0], "peak_pss_bytes": peak[1], "output": out}


def run_prepare(paths: list[str], cache: Path, extra: list[str] = ()) -> dict:
    """`python -m cluster.prepare` on ``paths``: wall time, peak memory, its stats."""
    run = run_measured(start_prepare(paths, cache, extra))
    [prepared] = cache.glob("data-*")
    stats = json.loads((prepared / "stats.json").read_text())
    return {**run, "stats": stats, "dir": prepared}


def raw_tokens_per_s(paths: list[str], tokenizer_dir: Path) -> float:
    """tokenizers' own encode_batch over every document text, batches of 8,192."""
    import glob

    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(tokenizer_dir).backend_tokenizer
    texts = [
        json.loads(line)["text"]
        for pattern in paths
        for f in sorted(glob.glob(pattern))
        if f.endswith(".jsonl") and "zz-bad" not in f
        for line in open(f, encoding="utf-8")
    ]
    started, tokens = time.perf_counter(), 0
    for i in range(0, len(texts), 8192):
        tokens += sum(len(e.ids) for e in backend.encode_batch(texts[i : i + 8192]))
    return tokens / (time.perf_counter() - started)


def near_removed(prepared: Path) -> set[str]:
    """The keys zeroray's preparation removed as near duplicates (its duplicates.jsonl)."""
    lines = (prepared / "duplicates.jsonl").read_text().splitlines()
    return {r["removed"] for r in map(json.loads, lines) if r["kind"] == "near"}


def near_duplicate_scores(manifest: dict, removed: set[str]) -> dict:
    """Recall on the planted near copies and false removals, from the keys a pipeline
    removed as near duplicates. A planted pair is found when one of its two documents went:
    which one a pipeline keeps is its own rule (zeroray keeps the first in corpus order;
    datatrove the first in its tasks' order, which is sometimes the copy). Any other
    removal, or the second of a pair, is false, as a share of the distinct documents."""
    copies = manifest["planted_near"]
    pairs = [{c, o} for c, o in zip(copies, manifest["near_originals"])]
    found = sum(1 for pair in pairs if pair & removed)
    extra = sum(max(0, len(pair & removed) - 1) for pair in pairs)
    in_pairs = set().union(*pairs) if pairs else set()
    distinct = manifest["documents"] - manifest["planted_exact"] - len(copies)
    return {
        "recall": found / max(1, len(pairs)),
        "false_removal_share": (len(removed - in_pairs) + extra) / max(1, distinct),
    }


# Decontamination off, as on zeroray's side of the datatrove comparison
# (bench/datatrove_bench.py), so that one run at a size serves both.
PREPARE = ["data.decontam.enabled=false"]


def measure(size_mib: int, work: Path, runs: dict | None = None) -> dict:
    """The figures of one size; ``runs`` (if given) keeps the run and its corpus's
    manifest by size, for the datatrove comparison at that size."""
    manifest = write_corpus(work / f"corpus-{size_mib}mib", size_mib)
    run = run_prepare(manifest["paths"], work / f"cache-{size_mib}mib", PREPARE)
    if runs is not None:
        runs[size_mib] = (run, manifest)
    tokens = sum(run["stats"]["tokens"].values())
    stages = json.loads((run["dir"] / "data_report.json").read_text())["stage_seconds"]
    packing = sum(v for k, v in stages.items() if k.startswith("pack_write"))
    return {
        "size_mib": size_mib,
        "wall_s": round(run["wall_s"], 1),
        "peak_rss_mib": round(run["peak_rss_bytes"] / 2**20),
        "peak_pss_mib": round(run["peak_pss_bytes"] / 2**20),
        "pipeline_tokens_per_s": tokens / run["wall_s"],
        "pack_stage_tokens_per_s": tokens / packing,
        "raw_tokens_per_s": raw_tokens_per_s(manifest["paths"], run["dir"] / "tokenizer"),
        **near_duplicate_scores(manifest, near_removed(run["dir"])),
        "stage_seconds": stages,
    }


def compare(sizes: list[int], work: Path, runs: dict | None = None) -> dict:
    small, large = (measure(s, work, runs) for s in sizes)
    return {"small": small, "large": large}


def rows(result: dict) -> list[tuple]:
    small, large = result["small"], result["large"]
    ratio = f"{large['size_mib']} / {small['size_mib']} MiB"
    return [
        (
            f"data prep: peak memory (sum of PSS), {ratio}",
            large["peak_pss_mib"],
            small["peak_pss_mib"],
            "goal <= 1.3",
        ),
        (
            f"data prep: peak sum of RSS (shared pages counted per process), {ratio}",
            large["peak_rss_mib"],
            small["peak_rss_mib"],
            "",
        ),
        (f"data prep: wall time, {ratio}", large["wall_s"], small["wall_s"], "goal <= 11"),
        (
            f"data prep: whole pipeline / raw encode_batch tokens/s ({large['size_mib']} MiB)",
            large["pipeline_tokens_per_s"],
            large["raw_tokens_per_s"],
            "goal >= 0.8",
        ),
        (
            f"data prep: its tokenize+pack+write stage / raw encode_batch tokens/s "
            f"({large['size_mib']} MiB)",
            large["pack_stage_tokens_per_s"],
            large["raw_tokens_per_s"],
            "(the stage the 0.8 compares with)",
        ),
        (
            f"data prep: near-duplicate recall on planted copies ({large['size_mib']} MiB)",
            large["recall"],
            1.0,
            "goal >= 0.9",
        ),
        (
            f"data prep: false near-duplicate removals, share ({large['size_mib']} MiB)",
            large["false_removal_share"],
            1.0,
            "goal <= 0.01",
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs=2, default=[100, 1024])
    parser.add_argument("--work", default=str(REPO_ROOT / "cache" / "data-bench"))
    args = parser.parse_args()
    result = compare(args.sizes, Path(args.work))
    print(json.dumps(result, indent=1))
    for label, a, b, goal in rows(result):
        print(f"{label}: {a:.4g} / {b:.4g} = {a / b:.3f} {goal}")
