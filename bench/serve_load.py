"""Load for an OpenAI-compatible server, as a client sees it: streamed completions over HTTP,
timing the first token and the whole request, while a sampler records the peak resident
memory of the server's processes. Used for zeroray and for its peers alike."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time

import httpx
import psutil

# Requests per concurrency level: the load (16 sequential requests for latency, then
# 64 at a time for throughput).
REQUESTS = {1: 16}
DEFAULT_REQUESTS = 64


class PeakMemory:
    """Peak of the summed RSS of some processes and their children, sampled every 20 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for proc in self.procs:
            try:
                for p in [proc, *proc.children(recursive=True)]:
                    total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def _one(http: httpx.AsyncClient, url: str, body: dict) -> dict:
    started = time.perf_counter()
    first, tokens = None, None
    async with http.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            if first is None and any(c.get("text") for c in event.get("choices", [])):
                first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    if tokens is None:
        raise RuntimeError(f"{url} sent no usage in its stream")
    return {"latency_s": time.perf_counter() - started, "ttft_s": first, "tokens": tokens}


async def _level(base: str, model: str, prompts: list[str], max_tokens: int, c: int) -> dict:
    gate = asyncio.Semaphore(c)
    n = REQUESTS.get(c, DEFAULT_REQUESTS)
    bodies = [
        {
            "model": model,
            "prompt": prompts[i % len(prompts)],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for i in range(n)
    ]

    async def gated(http, body):
        async with gate:
            return await _one(http, f"{base}/completions", body)

    limits = httpx.Limits(max_connections=c + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        results = await asyncio.gather(*(gated(http, b) for b in bodies))
        wall = time.perf_counter() - started
    latencies = sorted(r["latency_s"] for r in results)
    ttfts = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
    return {
        "requests": n,
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
    }


def measure(
    base: str, model: str, prompts: list[str], max_tokens: int, levels: list[int], pids: list[int]
) -> dict:
    """Each level's figures, plus the servers' peak memory over all of them (MiB)."""
    asyncio.run(_level(base, model, prompts[:2], max_tokens, 2))  # warm-up, not measured
    with PeakMemory(pids) as memory:
        results = {c: asyncio.run(_level(base, model, prompts, max_tokens, c)) for c in levels}
    return {"levels": results, "peak_rss_mib": memory.peak / 2**20}
