"""Echo with prompt log-probabilities is bounded: a prompt is scored a slice of positions at
a time (serve/logprobs.py), so a maximum-length echo + logprobs=5 + max_tokens=0 request on a
large-vocabulary, long-context export takes a bounded amount of memory, and a stream beside
it decodes exactly its solo text. Scored tokens are counted by admission
(serve.max_scored_tokens). Driven through the replica's whole HTTP API, without Ray."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
import torch
from serve_requests import stream_text
from transformers import GPT2Config, GPT2LMHeadModel

from serve.generator import Generator

VOCAB = 65_536  # all positions' logits of a full-context prompt: 512 MiB in fp32
POSITIONS = 2_048
# What the scoring may add to the process's peak resident memory. Measured with
# `pytest -s tests/unit/test_serve_scoring.py` on the 2-core machine: 61 MiB scored in
# slices; 1,037 MiB with every position's logits at once (the code before slicing).
PEAK_BOUND_MIB = 256


@pytest.fixture(scope="module")
def wide_gen(tmp_path_factory, tiny_tokenizer) -> Generator:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=POSITIONS,
        vocab_size=VOCAB,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        initializer_range=0.3,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        # Rows past the tokenizer's (and EOS) get logit 0 through the tied output embedding,
        # so greedy text is made of tokens the tokenizer can show and runs to max_tokens.
        model.transformer.wte.weight[len(tiny_tokenizer) :] = 0.0
        model.transformer.wte.weight[tiny_tokenizer.eos_token_id] = 0.0
    path = tmp_path_factory.mktemp("wide") / "tiny-gpt2"
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return Generator(str(path), device="cpu")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets the process's peak resident set (VmHWM).
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def test_a_stream_decodes_its_solo_text_beside_a_full_context_echo_with_logprobs(
    wide_gen, make_openai_app, tiny_tokenizer
):
    app = make_openai_app(wide_gen)
    stream_body = {"model": "tiny-gpt2", "prompt": "The list of", "max_tokens": 120}
    random.seed(0)
    echo_ids = [random.randrange(len(tiny_tokenizer)) for _ in range(POSITIONS)]
    echo = {"model": "tiny-gpt2", "prompt": echo_ids, "echo": True, "logprobs": 5}

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=300) as h:
            alone = await stream_text(h, "/v1/completions", {**stream_body, "temperature": 0})
            _reset_peak_rss()
            before_kib = _status_kib("VmRSS")
            beside = asyncio.create_task(
                stream_text(h, "/v1/completions", {**stream_body, "temperature": 0})
            )
            await asyncio.sleep(0.05)  # the stream is decoding when the echo arrives
            scored = await h.post("/v1/completions", json={**echo, "max_tokens": 0})
            return alone, await beside, scored, (_status_kib("VmHWM") - before_kib) / 1024

    alone, beside, scored, peak_mib = asyncio.run(scenario())
    assert scored.status_code == 200, scored.text[:300]
    logprobs = scored.json()["choices"][0]["logprobs"]
    assert len(logprobs["token_logprobs"]) == POSITIONS and logprobs["token_logprobs"][0] is None
    assert beside == alone and alone
    assert peak_mib < PEAK_BOUND_MIB, f"scoring took {peak_mib:.0f} MiB above the baseline"
    print(f"peak resident memory above the baseline: {peak_mib:.0f} MiB")


def test_scored_tokens_are_admitted_by_their_budget(make_openai_app, gen):
    from fastapi.testclient import TestClient

    app = make_openai_app(gen, max_scored_tokens=8)
    ids = gen.encode("Raise a ValueError if the value is not a string, and return the")
    assert len(ids) > 8
    with TestClient(app) as http:
        r = http.post(
            "/v1/completions",
            json={"model": "tiny-gpt2", "prompt": ids, "echo": True, "logprobs": 1},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs", r.text
        # Without logprobs nothing is scored: the same prompt is served.
        fine = {"model": "tiny-gpt2", "prompt": ids, "echo": True, "max_tokens": 2}
        assert http.post("/v1/completions", json=fine).status_code == 200
