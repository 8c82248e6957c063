"""The real Serve app over HTTP, attacked: every bad request gets a 4xx in the OpenAI shape
while a good stream running at the same time decodes exactly what it decodes alone; a soak
of mixed good, bad and abandoned requests leaves no 5xx and no leaked in-flight slot.

Served as `make serve` serves, in Ray Serve's throughput-optimized mode, and attacked at
each replica's own URL (test_serve.py covers the path through Serve's proxy)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time

import httpx
import pytest
from ray import serve
from serve_apps import deploy

from cluster.serve import THROUGHPUT_OPTIMIZED, replica_urls
from schemas.serving import AutoscalingConfig, ServeConfig

MODEL = "tiny-gpt2"
# A chat template that refuses system messages, as some real templates do.
STRICT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('system messages are not supported') }}{% endif %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"
)


@pytest.fixture(scope="module")
def throughput_optimized_cluster(ray_cluster):
    """The session's cluster restarted in the mode `make serve` starts (read by every Serve
    process at start-up), and put back as it was afterwards."""
    ray_cluster.shutdown()
    os.environ[THROUGHPUT_OPTIMIZED] = "1"
    try:
        ray_cluster.init(num_cpus=2, logging_level="WARNING")
    finally:
        os.environ.pop(THROUGHPUT_OPTIMIZED)
    yield
    ray_cluster.shutdown()
    ray_cluster.init(num_cpus=2, logging_level="WARNING")


@pytest.fixture(scope="module")
def server(throughput_optimized_cluster, tiny_export, tmp_path_factory) -> dict:
    """app name -> the base URL of its replica's own HTTP server."""
    strict = tmp_path_factory.mktemp("strict") / MODEL
    shutil.copytree(tiny_export, strict)
    config = json.loads((strict / "tokenizer_config.json").read_text())
    (strict / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": STRICT_TEMPLATE})
    )
    small = dict(num_cpus=0.25, autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=1))
    deploy(
        {
            "adv": ServeConfig(
                model_dir=str(tiny_export),
                max_batch_size=16,
                max_body_bytes=200_000,
                max_prompts_per_request=8,
                **small,
            ),
            "strict": ServeConfig(model_dir=str(strict), max_batch_tokens=48, **small),
        }
    )
    yield {app: f"{replica_urls(app, '127.0.0.1')[0]}/{app}" for app in ("adv", "strict")}
    serve.shutdown()


def _chat(content: str = "hi", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def _cmpl(**extra) -> dict:
    return {"model": MODEL, "prompt": "The", "max_tokens": 2, **extra}


def _raw(text: str) -> bytes:
    return text.encode()


def _deep(levels: int) -> bytes:
    return _raw(f'{{"model": "{MODEL}", "prompt": "x", "user": {"[" * levels}1{"]" * levels}}}')


async def _chunked(body: bytes, piece: int = 4096):
    for i in range(0, len(body), piece):
        yield body[i : i + piece]


# (app, route, body, status, the error's param prefix or None)
BAD = [
    ("adv", "completions", _cmpl(seed=2**64), 400, "seed"),
    ("adv", "completions", _cmpl(seed=-(2**63) - 1), 400, "seed"),
    ("adv", "completions", {"model": MODEL, "prompt": ["x"] * 250}, 400, "prompt"),
    ("adv", "completions", _cmpl(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("adv", "completions", _cmpl(stop="z" * 1000), 400, "stop"),
    ("adv", "completions", _deep(64), 400, "user"),
    ("adv", "completions", _raw("[" * 150_000), 400, None),
    ("adv", "completions", _raw(f'{{"model": "{MODEL}", "prompt": "\\ud800"}}'), 400, "prompt"),
    (
        "adv",
        "chat/completions",
        _raw(json.dumps(_chat()).replace("hi", "\\udfff")),
        400,
        "messages",
    ),
    ("adv", "completions", b'{"model": "tiny-gpt2", "prompt": "\xff\xfe"}', 400, None),
    ("adv", "completions", _cmpl(n=3), 400, "n"),
    ("adv", "completions", _cmpl(logit_bias={"1": 5}), 400, "logit_bias"),
    ("adv", "completions", _cmpl(max_tokens=10**30), 400, "max_tokens"),
    ("adv", "completions", _cmpl(temperature=float("inf")), 400, "temperature"),
    (
        "strict",
        "chat/completions",
        {**_chat(), "messages": [{"role": "system", "content": "s"}]},
        400,
        "messages",
    ),
    ("strict", "completions", _cmpl(max_tokens=60), 400, "prompt"),  # > max_batch_tokens=48
]


async def _post(http, url: str, body, chunked: bool = False) -> httpx.Response:
    if isinstance(body, dict):
        body = json.dumps(body, allow_nan=True).encode()
    content = _chunked(body) if chunked else body
    return await http.post(url, content=content, headers={"content-type": "application/json"})


def _assert_openai_error(r: httpx.Response, status: int, param: str | None) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param:
        assert (error["param"] or "").startswith(param), error


async def _stream_text(http, url: str, body: dict) -> str:
    text = []
    async with http.stream("POST", url, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                assert "error" not in event, event
                text.append(event["choices"][0]["text"])
    return "".join(text)


def test_every_bad_request_is_a_4xx_and_a_good_stream_beside_them_is_unchanged(server):
    good = {"model": MODEL, "prompt": "The list of", "max_tokens": 40, "temperature": 0}

    async def run():
        async with httpx.AsyncClient(timeout=120) as http:
            url = f"{server['adv']}/v1/completions"
            alone = await _stream_text(http, url, good)
            beside = asyncio.create_task(_stream_text(http, url, good))
            bad = await asyncio.gather(
                *(_post(http, f"{server[app]}/v1/{route}", body) for app, route, body, _, _ in BAD)
            )
            return alone, await beside, bad

    alone, beside, responses = asyncio.run(run())
    for (*_, status, param), r in zip(BAD, responses):
        _assert_openai_error(r, status, param)
    assert beside == alone and alone


def test_a_tiny_temperature_is_greedy_not_nan(server):
    url = f"{server['adv']}/v1/completions"
    greedy = httpx.post(url, json=_cmpl(max_tokens=12, temperature=0), timeout=60).json()
    tiny = httpx.post(url, json=_cmpl(max_tokens=12, temperature=1e-40), timeout=60)
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_a_template_error_refuses_only_that_request(server):
    url = f"{server['strict']}/v1/chat/completions"
    refused = httpx.post(url, json={**_chat(), "messages": [{"role": "system", "content": "s"}]})
    assert "system messages are not supported" in refused.json()["error"]["message"]
    assert httpx.post(url, json=_chat(max_tokens=2), timeout=60).status_code == 200


def test_chunked_bodies_are_read_up_to_the_limit(server):
    url = f"{server['adv']}/v1/completions"

    async def run():
        async with httpx.AsyncClient(timeout=60) as http:
            ok = await _post(http, url, _cmpl(), chunked=True)
            big = await _post(http, url, _cmpl(prompt="x" * 300_000), chunked=True)
            return ok, big

    ok, big = asyncio.run(run())
    assert "content-length" not in ok.request.headers
    assert ok.status_code == 200, ok.text
    _assert_openai_error(big, 413, None)


def _in_flight(server: str) -> int:
    return httpx.get(f"{server['adv']}/health", timeout=10).json()["in_flight"]


def test_soak_mixed_bad_and_abandoned_requests(server):
    """300 requests at concurrency 32: one in five bad (mixed kinds), 50 streams whose
    clients leave early (before the response starts, or after its first event)."""
    url = f"{server['adv']}/v1"
    bad_kinds = [(route, body, status) for app, route, body, status, _ in BAD if app == "adv"]
    abandoned = set([i for i in range(300) if i % 5 != 0][1::4][:50])
    outcomes: dict[str, list] = {"good": [], "bad": [], "left": []}

    async def one(http, i: int) -> None:
        if i % 5 == 0:
            route, body, status = bad_kinds[(i // 5) % len(bad_kinds)]
            r = await _post(http, f"{url}/{route}", body)
            outcomes["bad"].append((r.status_code, status, r.headers["content-type"]))
        elif i in abandoned:
            body = _cmpl(max_tokens=40, seed=i, stream=True)
            if i % 2:
                with pytest.raises(asyncio.TimeoutError):  # gone before the first byte
                    await asyncio.wait_for(_post(http, f"{url}/completions", body), 0.01)
            else:
                async with http.stream("POST", f"{url}/completions", json=body) as r:
                    async for _ in r.aiter_lines():
                        break  # gone after the first event
            outcomes["left"].append(i)
        elif i % 3 == 0:
            text = await _stream_text(http, f"{url}/completions", _cmpl(max_tokens=6, seed=i))
            outcomes["good"].append(200 if text is not None else 0)
        else:
            route, body = (
                ("chat/completions", _chat(f"q{i}", max_tokens=5, seed=i))
                if i % 2
                else ("completions", _cmpl(prompt=f"Item {i}", max_tokens=5, seed=i))
            )
            r = await _post(http, f"{url}/{route}", body)
            ok = r.status_code == 200 and r.json()["choices"][0]["finish_reason"]
            outcomes["good"].append(200 if ok else (r.status_code, r.text[:200]))

    async def run():
        gate = asyncio.Semaphore(32)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:

            async def gated(i):
                async with gate:
                    await one(http, i)

            await asyncio.gather(*(gated(i) for i in range(300)))

    asyncio.run(run())
    assert len(outcomes["left"]) == 50
    assert outcomes["good"] == [200] * (300 - 60 - 50)
    wrong = [o for o in outcomes["bad"] if o[0] != o[1] or not o[2].startswith("application/json")]
    assert len(outcomes["bad"]) == 60 and not wrong, wrong
    deadline = time.monotonic() + 60
    while _in_flight(server) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _in_flight(server) == 0
