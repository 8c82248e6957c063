"""Serving benchmark: zeroray's Serve endpoint against `transformers serve
--continuous-batching` (transformers' own OpenAI-compatible server, paged attention) and
against sequential `transformers.generate`, on the same export.

    python -m bench.serve_bench [--export DIR] [--max-tokens 32] [--concurrency 1 8 32]

All three run on the same export, prompts, greedy decoding and number of model threads, one
after the other in one run; only ratios are meant to be compared (these machines are noisy).
Servers are measured as clients see them (bench/serve_load.py): streamed requests, time to
first token, latency percentiles, and the peak memory of the serving processes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from bench.serve_load import measure

PROMPTS = [
    "The",
    "Return the",
    "This module",
    "A list of",
    "If the",
    "In Python,",
    "The function",
    "An object",
]


def baseline(export: str, prompts: list[str], max_tokens: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    latencies, tokens = [], 0
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        latencies.append(time.perf_counter() - started)
        tokens += out.shape[1] - inputs["input_ids"].shape[1]
    return {
        "tokens_per_s": tokens / sum(latencies),
        "p50_s": statistics.median(latencies),
        "requests": len(prompts),
    }


@contextmanager
def zeroray_server(export: str, cpus: int, batch: int, max_ongoing: int):
    """`make serve`'s app on a fresh local Ray cluster, in the throughput-optimized mode
    `make serve` starts: (the replica's own base URL, model id, the pids of the serving
    processes: the replica and Serve's HTTP proxy)."""
    import ray
    from ray import serve

    from cluster.serve import THROUGHPUT_OPTIMIZED, replica_urls
    from schemas.serving import AutoscalingConfig, ServeConfig
    from serve.deployment import build_app

    port = _free_port()
    saved = os.environ.get(THROUGHPUT_OPTIMIZED)
    os.environ[THROUGHPUT_OPTIMIZED] = "1"
    try:
        ray.init(num_cpus=cpus, logging_level="ERROR", include_dashboard=False)
    finally:  # the cluster has it now; later clusters of this process are left as they were
        if saved is None:
            os.environ.pop(THROUGHPUT_OPTIMIZED)
        else:
            os.environ[THROUGHPUT_OPTIMIZED] = saved
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = ServeConfig(
            model_dir=export,
            num_cpus=cpus,
            max_batch_size=batch,
            max_ongoing_requests=max_ongoing,
            autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=1),
        )
        serve.run(build_app(args), name="bench", route_prefix="/")
        [url] = replica_urls("bench", "127.0.0.1")
        yield f"{url}/v1", Path(export).name, _serving_pids()
    finally:
        serve.shutdown()
        ray.shutdown()


@contextmanager
def peer_server(export: str, threads: int, timeout_s: float = 180):
    """`transformers serve --continuous-batching` on the same export, its model on
    ``threads`` threads: (base URL, model id, [its pid])."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [
        str(Path(sys.executable).parent / "transformers"),
        "serve",
        "--continuous-batching",
        "--device",
        "cpu",
        "--port",
        str(port),
        export,
    ]
    log = tempfile.TemporaryFile()  # not a pipe: it logs every request, a pipe would fill
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"transformers serve did not start: {tail}")
            time.sleep(0.5)
        yield f"{base}/v1", export, [proc.pid]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _serving_pids() -> list[int]:
    """The replica and the HTTP proxy, found by the process titles Ray gives its actors."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith(("ray::ServeReplica:bench", "ray::ProxyActor")):
            pids.append(proc.pid)
    return pids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare(export: str, levels: list[int], max_tokens: int, threads: int = 1) -> dict:
    """zeroray, the transformers serve peer and sequential generate, one after the other on
    the same export, load and threads."""
    results = {"baseline": baseline(export, PROMPTS, max_tokens, threads)}
    with zeroray_server(export, threads, batch=max(levels), max_ongoing=2 * max(levels)) as s:
        results["zeroray"] = measure(*s[:2], PROMPTS, max_tokens, levels, s[2])
    with peer_server(export, threads) as s:
        results["peer"] = measure(*s[:2], PROMPTS, max_tokens, levels, s[2])
    return results


def print_comparison(results: dict) -> None:
    base, ours, peer = results["baseline"], results["zeroray"], results["peer"]
    print(
        f"\n{'':<22}{'zeroray':>10}{'peer':>10}{'ratio':>8}   (peer: transformers serve "
        "--continuous-batching)"
    )
    for c in ours["levels"]:
        a, b = ours["levels"][c], peer["levels"][c]
        for key, label, scale in (
            ("tokens_per_s", "tokens/s", 1),
            ("p50_s", "p50 ms", 1000),
            ("p99_s", "p99 ms", 1000),
            ("ttft_p50_s", "TTFT p50 ms", 1000),
        ):
            if a[key] is None or b[key] is None:
                continue
            print(
                f"c={c:<3} {label:<16}{a[key] * scale:>10.1f}{b[key] * scale:>10.1f}"
                f"{a[key] / b[key]:>8.2f}"
            )
    print(
        f"{'peak memory MiB':<22}{ours['peak_rss_mib']:>10.0f}{peer['peak_rss_mib']:>10.0f}"
        f"{ours['peak_rss_mib'] / peer['peak_rss_mib']:>8.2f}"
    )
    print(
        f"{'sequential generate':<22}{base['tokens_per_s']:>10.1f} tokens/s, p50 "
        f"{base['p50_s'] * 1000:.1f} ms"
    )


def main() -> int:
    from rundir.layout import newest_export

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", default=None, help="export dir (default: newest in runs/)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--threads", type=int, default=1, help="model threads of every side (replica CPUs)"
    )
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    export = args.export or (str(newest_export("runs") or ""))
    if not export:
        raise SystemExit(
            "error: --export not given and no export under runs/; run `make train` first"
        )
    results = compare(export, args.concurrency, args.max_tokens, args.threads)
    print(f"\nexport {export}, {args.max_tokens} new tokens per request, greedy")
    print_comparison(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"export": export, **results}, indent=2, default=str))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
