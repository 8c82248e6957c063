"""The event loop keeps answering under heavy authenticated load: while 20 clients each send
/tokenize a 1 MB text, a stream beside them keeps its chunks coming and /health answers,
each within 0.5 s. /tokenize's output is bounded by the context, tokenizing runs off the
loop, and the decode loop has a thread of its own. A real HTTP server (uvicorn, as in a
replica) in a process of its own, real sockets, no Ray."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

REPO_ROOT = Path(__file__).resolve().parents[2]

MAX_GAP_S = 0.5
TEXT_BYTES = 1_000_000


SERVER = """
import sys, torch, uvicorn
from schemas.serving import ServeConfig
from serve.api.router import build_openai_app
from serve.generator import Generator
from serve.scheduler import Scheduler
torch.set_num_threads(1)  # as in a replica: Ray sets torch's threads to its num_cpus
export, port = sys.argv[1], int(sys.argv[2])
gen = Generator(export, device="cpu")
# /tokenize bounded by the context here (the default leaves room for lm-eval's documents)
config = ServeConfig(
    model_dir=export,
    max_body_bytes=2_000_000,
    max_tokens_limit=1500,
    max_tokenize_tokens=2048,
)
app = build_openai_app(config, gen, Scheduler.from_config(gen, config))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")
"""


@pytest.fixture(scope="module")
def base_url(tiny_tokenizer, tmp_path_factory):
    """The replica's API in a process of its own (as a replica is: the client's own work
    must not count as the server's stalls), on a long-context export."""
    torch.manual_seed(0)
    ids = {k: getattr(tiny_tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = GPT2Config(
        n_embd=32, n_layer=2, n_head=2, n_positions=2048, vocab_size=len(tiny_tokenizer), **ids
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # EOS logit 0, never greedy's pick: the stream runs to max_tokens
        model.transformer.wte.weight[tiny_tokenizer.eos_token_id] = 0.0
    export = tmp_path_factory.mktemp("long") / "tiny-gpt2"
    model.save_pretrained(export)
    tiny_tokenizer.save_pretrained(export)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(export), str(port)], env=env, cwd=REPO_ROOT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_a_stream_and_health_keep_answering_beside_20_large_tokenize_requests(base_url):
    words = "the value of a list is returned as a string when asked "
    text = (words * (TEXT_BYTES // len(words) + 1))[:TEXT_BYTES]

    async def scenario():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as http:
            body = {
                "model": "tiny-gpt2",
                "prompt": "The list of",
                "max_tokens": 1500,
                "temperature": 0,
                "stream": True,
            }
            chunk_times, health_s, statuses = [], [], []
            burst_over = asyncio.Event()

            async def stream():
                async with http.stream("POST", "/v1/completions", json=body) as r:
                    assert r.status_code == 200, await r.aread()
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            assert "error" not in json.loads(line[6:])
                            chunk_times.append(time.perf_counter())

            async def health():
                while not burst_over.is_set():
                    start = time.perf_counter()
                    assert (await http.get("/health")).status_code == 200
                    health_s.append(time.perf_counter() - start)
                    await asyncio.sleep(0.05)

            async def tokenize():
                r = await http.post("/tokenize", json={"prompt": text})
                statuses.append(r.status_code)

            streaming = asyncio.create_task(stream())
            while len(chunk_times) < 20:  # decoding, warm, before the burst starts
                assert not streaming.done(), streaming
                await asyncio.sleep(0.01)
            checking = asyncio.create_task(health())
            burst_start = time.perf_counter()
            await asyncio.gather(*(tokenize() for _ in range(20)))
            burst_end = time.perf_counter()
            burst_over.set()
            await checking
            await streaming
            # The chunks around the burst: the last before it to the first after it.
            first = max(i for i, t in enumerate(chunk_times) if t <= burst_start)
            last = min((i for i, t in enumerate(chunk_times) if t >= burst_end), default=-1)
            during = chunk_times[first:] if last < 0 else chunk_times[first : last + 1]
            return chunk_times, during, health_s, statuses, burst_end - burst_start

    chunk_times, during, health_s, statuses, burst_s = asyncio.run(scenario())
    gaps = [b - a for a, b in zip(during, during[1:])]
    print(
        f"burst {burst_s:.2f} s, {len(during)} chunks through it; "
        f"longest chunk gap {max(gaps):.3f} s; "
        f"slowest /health {max(health_s):.3f} s over {len(health_s)} calls"
    )
    assert statuses == [400] * 20  # a million ids are more than max_tokenize_tokens
    assert chunk_times[-1] > chunk_times[0] + burst_s / 2  # the stream ran through the burst
    assert max(gaps) < MAX_GAP_S
    assert health_s and max(health_s) < MAX_GAP_S
