"""Load for an OpenAI-compatible server, as its users send it: the `openai` client's
completions, streamed or not, at a given concurrency and number of new tokens, timing the
first token (streamed) and the whole request, while a sampler records the peak resident
memory of the server's processes. Used for zeroray and for its peers alike."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass

import openai
import psutil

# Requests per concurrency level: the load (16 sequential requests for latency, then
# 64 at a time for throughput).
REQUESTS = {1: 16}
DEFAULT_REQUESTS = 64


@dataclass(frozen=True)
class Case:
    """One load: streamed or not, new tokens per request, requests in flight at once."""

    stream: bool
    max_tokens: int
    concurrency: int

    @property
    def key(self) -> str:  # the JSON key of its figures
        return f"{'stream' if self.stream else 'whole'}-{self.max_tokens}-c{self.concurrency}"

    @property
    def requests(self) -> int:
        return REQUESTS.get(self.concurrency, DEFAULT_REQUESTS)


def cases(levels: list[int], max_tokens: list[int], streams=(True, False)) -> list[Case]:
    return [Case(s, t, c) for s in streams for t in max_tokens for c in levels]


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


async def _one(client: openai.AsyncOpenAI, case: Case, body: dict) -> dict:
    started = time.perf_counter()
    first, tokens = None, None
    if not case.stream:
        out = await client.completions.create(**body)
        tokens = out.usage.completion_tokens
    else:
        stream = await client.completions.create(
            **body, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            if first is None and any(c.text for c in chunk.choices):
                first = time.perf_counter() - started
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        if tokens is None:
            raise RuntimeError(f"{client.base_url} sent no usage in its stream")
    return {"latency_s": time.perf_counter() - started, "ttft_s": first, "tokens": tokens}


async def _level(
    base: str, model: str, prompts: list[str], case: Case, api_key: str, n: int | None = None
) -> dict:
    gate = asyncio.Semaphore(case.concurrency)
    n = n or case.requests
    bodies = [
        {
            "model": model,
            "prompt": prompts[i % len(prompts)],
            "max_tokens": case.max_tokens,
            "temperature": 0,
        }
        for i in range(n)
    ]

    async def gated(body):
        async with gate:
            return await _one(client, case, body)

    client = openai.AsyncOpenAI(base_url=base, api_key=api_key, max_retries=0, timeout=300)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(gated(b) for b in bodies))
        wall = time.perf_counter() - started
    finally:
        await client.close()
    latencies = sorted(r["latency_s"] for r in results)
    ttfts = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
    return {
        "requests": n,
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
    }


def warm_up(base: str, model: str, prompts: list[str], api_key: str = "unused") -> None:
    """A few requests of each kind, not measured: connections, first-call paths."""
    for stream in (True, False):
        asyncio.run(_level(base, model, prompts[:2], Case(stream, 8, 2), api_key, n=8))


def run_case(
    base: str, model: str, prompts: list[str], case: Case, api_key: str = "unused"
) -> dict:
    """One load's figures: tokens/s over its wall time, latency p50 / p99, and for a
    streamed load the median time to the first token."""
    return asyncio.run(_level(base, model, prompts, case, api_key))
