"""Serving benchmark: zeroray's Serve endpoint against `transformers serve
--continuous-batching` (transformers' own OpenAI-compatible server, paged attention) and
against sequential `transformers.generate`, on the same export.

    python -m bench.serve_bench [--export DIR] [--max-tokens 32 96] [--concurrency 1 8 32]
                                [--ingress haproxy|proxy]

zeroray is measured where users call it, the port `make serve` prints (its ingress balancing
across replicas), and at its replica's own URL, the ceiling no ingress can beat. Every side
runs the same export, prompts, greedy decoding and number of model threads; only ratios are
meant to be compared (these machines are noisy). Servers are measured as clients see them,
with the `openai` client (bench/serve_load.py): streamed and whole responses, tokens/s,
latency percentiles, time to first token, and the peak memory of the serving processes.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from bench.serve_load import PeakMemory, cases, run_case, warm_up

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
def zeroray_server(
    export: str, cpus: int, batch: int, max_ongoing: int, ingress: str = "haproxy", port=None
):
    """`make serve`'s app on a fresh local Ray cluster with `make serve`'s ingress (or the
    one named): {"port": the base URL users call, where the ingress balances across
    replicas; "replica": the one replica's own base URL, no ingress in between (the
    ceiling); "model": the model id; "pids": the serving processes (replica, ingress)}."""
    import ray
    from ray import serve

    from cluster.serve import ingress_env, replica_urls, wait_ready
    from schemas.serving import AutoscalingConfig, ServeConfig
    from serve.deployment import build_app

    port = port or serve_port()
    # Its replica, when the cluster stops, waits 1 s rather than 30 for load balancers to
    # forget it: nothing is sent to it by then.
    env = ingress_env(ingress, throughput_optimized=True)
    env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=cpus, logging_level="ERROR", include_dashboard=False)
    finally:  # the cluster has it now; later clusters of this process are left as they were
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
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
        root = f"http://127.0.0.1:{port}"
        wait_ready(root)
        [url] = replica_urls("bench", "127.0.0.1")
        yield {
            "port": f"{root}/v1",
            "replica": f"{url}/v1",
            "model": Path(export).name,
            "pids": _serving_pids(),
        }
    finally:
        serve.shutdown()
        ray.shutdown()


def serve_port() -> int:
    """8000, `make serve`'s port, unless something else listens there (then any free one:
    the ingress is the same)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
            return 8000
        except OSError:
            return _free_port()


@contextmanager
def peer_server(export: str, threads: int, timeout_s: float = 180):
    """`transformers serve --continuous-batching` on the same export, its model on
    ``threads`` threads: {"port": its base URL, "model": the model id, "pids": [its pid]}."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [
        str(Path(sys.executable).parent / "transformers"),
        "serve",
        "--continuous-batching",
        # Its paged KV cache takes a share of free memory (on CPUs, of the machine's: 8-14 GiB
        # here, where Ray's memory monitor then kills the replicas of every cluster on the
        # machine); a tenth still holds thousands of 32-request batches of this model's tokens.
        "--cb-max-memory-percent",
        "0.1",
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
        yield {"port": f"{base}/v1", "model": export, "pids": [proc.pid]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _serving_pids() -> list[int]:
    """The replica and the ingress (Serve's proxy; HAProxy's manager, whose child HAProxy
    is), found by the process titles Ray gives its actors."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith(("ray::ServeReplica:bench", "ray::ProxyActor", "ray::HAProxyMan")):
            pids.append(proc.pid)
    return pids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare(
    export: str,
    levels: list[int],
    max_tokens: list[int],
    threads: int = 1,
    ingress: str = "haproxy",
    streams: tuple[bool, ...] = (True, False),
) -> dict:
    """Sequential generate, then zeroray (through its port and through its replica's own
    URL) and the transformers serve peer, both up at once, taking each load in turn: the
    three sides of a row are measured within seconds of each other, so the machine's swings
    (other users of its cores) move them together. Same export, prompts and threads."""
    results: dict = {
        "ingress": ingress,
        "baseline": {str(t): baseline(export, PROMPTS, t, threads) for t in max_tokens},
    }
    loads = cases(levels, max_tokens, streams)
    top = max(levels)
    with (
        zeroray_server(export, threads, batch=top, max_ongoing=2 * top, ingress=ingress) as ours,
        peer_server(export, threads) as peer,
    ):
        sides = {
            "port": (ours["port"], ours["model"]),
            "replica": (ours["replica"], ours["model"]),
            "peer": (peer["port"], peer["model"]),
        }
        for base, model in sides.values():
            warm_up(base, model, PROMPTS)
        figures: dict = {side: {} for side in sides}
        with PeakMemory(ours["pids"]) as our_memory, PeakMemory(peer["pids"]) as peer_memory:
            for load in loads:
                for side, (base, model) in sides.items():
                    figures[side][load.key] = run_case(base, model, PROMPTS, load)
    results["zeroray"] = {
        "port": figures["port"],
        "replica": figures["replica"],
        "peak_rss_mib": our_memory.peak / 2**20,
    }
    results["peer"] = {"cases": figures["peer"], "peak_rss_mib": peer_memory.peak / 2**20}
    results["loads"] = [dataclasses.asdict(load) | {"key": load.key} for load in loads]
    return results


def print_comparison(results: dict) -> None:
    ours, peer = results["zeroray"], results["peer"]
    print(
        f"\n{'load (tokens/s; p50 ms)':<24}{'port':>9}{'replica':>9}{'peer':>9}"
        f"{'port/peer':>11}{'port/replica':>14}   (port: ingress={results['ingress']}; "
        "peer: transformers serve --continuous-batching)"
    )
    for load in results["loads"]:
        key = load["key"]
        a, r, b = ours["port"][key], ours["replica"][key], peer["cases"][key]
        for metric, label, scale in (("tokens_per_s", "tok/s", 1), ("p50_s", "p50", 1000)):
            print(
                f"{key + ' ' + label:<24}{a[metric] * scale:>9.1f}{r[metric] * scale:>9.1f}"
                f"{b[metric] * scale:>9.1f}{a[metric] / b[metric]:>11.2f}"
                f"{a[metric] / r[metric]:>14.2f}"
            )
    print(
        f"{'peak memory MiB':<24}{ours['peak_rss_mib']:>9.0f}{'':>9}{peer['peak_rss_mib']:>9.0f}"
        f"{ours['peak_rss_mib'] / peer['peak_rss_mib']:>11.2f}"
    )
    for tokens, base in results["baseline"].items():
        print(
            f"sequential generate, {tokens} tokens: {base['tokens_per_s']:.1f} tokens/s, "
            f"p50 {base['p50_s'] * 1000:.1f} ms"
        )


def main() -> int:
    from rundir.layout import newest_export
    from schemas.jobs import INGRESSES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", default=None, help="export dir (default: newest in runs/)")
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--threads", type=int, default=1, help="model threads of every side (replica CPUs)"
    )
    parser.add_argument("--ingress", choices=INGRESSES, default="haproxy")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    export = args.export or (str(newest_export("runs") or ""))
    if not export:
        raise SystemExit(
            "error: --export not given and no export under runs/; run `make train` first"
        )
    results = compare(export, args.concurrency, args.max_tokens, args.threads, args.ingress)
    print(f"\nexport {export}, greedy")
    print_comparison(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"export": export, **results}, indent=2, default=str))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
