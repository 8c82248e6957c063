"""Where data preparation's memory goes, over time: `python -m cluster.prepare` on the
synthetic corpus (as bench/data_bench.py runs it), with each second's PSS summed by kind of
process (the driver, Ray's own daemons, workers by the task they run) and the object store's
use of /dev/shm. Prints the peak and a timeline; what found the memory that grew with the
corpus (docs/data-preparation.md, Figures).

    python -m bench.memory_timeline --size 1024 [--work DIR] [override ...]
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

import psutil

from bench.data_bench import REPO_ROOT, start_prepare
from bench.synthetic_corpus import write_corpus

DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py")


def kind(proc: psutil.Process) -> str:
    try:
        cmdline = " ".join(proc.cmdline())
        if "cluster.prepare" in cmdline:
            return "driver"
        return next((d for d in DAEMONS if d in cmdline), proc.name()[:48])
    except psutil.Error:
        return "?"


def sample(root: psutil.Process) -> dict[str, int]:
    by_kind: dict[str, int] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            pss = proc.memory_full_info().pss
        except psutil.Error:
            continue
        by_kind[kind(proc)] = by_kind.get(kind(proc), 0) + (pss >> 20)
    return by_kind


def timeline(size_mib: int, work: Path, overrides: list[str]) -> list[dict]:
    manifest = write_corpus(work / f"corpus-{size_mib}mib", size_mib)
    cache = work / f"cache-{size_mib}mib"
    shutil.rmtree(cache, ignore_errors=True)
    proc = start_prepare(manifest["paths"], cache, overrides)
    root, started, rows = psutil.Process(proc.pid), time.perf_counter(), []

    def run() -> None:
        while proc.poll() is None:
            by_kind = sample(root)
            shm = shutil.disk_usage("/dev/shm").used >> 20
            rows.append(
                {
                    "t": time.perf_counter() - started,
                    "total": sum(by_kind.values()),
                    "shm": shm,
                    "by_kind": by_kind,
                }
            )
            time.sleep(1.0)

    sampler = threading.Thread(target=run, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(out[-3000:])
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--work", default=str(REPO_ROOT / "cache" / "data-bench"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    rows = timeline(args.size, Path(args.work), args.overrides)
    for row in rows[:: max(1, len(rows) // 40)] + [max(rows, key=lambda r: r["total"])]:
        top = sorted(row["by_kind"].items(), key=lambda kv: -kv[1])[:5]
        print(f"{row['t']:6.1f} s  PSS {row['total']:5d} MiB  shm {row['shm']:5d} MiB  {top}")
