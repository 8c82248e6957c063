"""The replica's API attacked, without Ray Serve: every bad request gets a 4xx in the OpenAI
shape while a good stream running at the same time decodes exactly what it decodes alone;
a tiny temperature is greedy; a chat template's refusal ends only its own request; chunked
bodies are read up to the limit. The soak of mixed good, bad and abandoned requests runs on
a real Serve replica (tests/integration/test_serve.py)."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_requests import (
    ADV_SETTINGS,
    BAD,
    MODEL,
    STRICT_SETTINGS,
    STRICT_TEMPLATE,
    chat,
    cmpl,
    post,
    stream_text,
)

from serve.generator import Generator


@pytest.fixture(scope="module")
def strict_gen(export_dir, tmp_path_factory) -> Generator:
    """The tiny export with a chat template that refuses system messages."""
    strict = tmp_path_factory.mktemp("strict") / MODEL
    shutil.copytree(export_dir, strict)
    config = json.loads((strict / "tokenizer_config.json").read_text())
    (strict / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": STRICT_TEMPLATE})
    )
    return Generator(str(strict), device="cpu")


@pytest.fixture
def apps(make_openai_app, strict_gen) -> dict:
    return {
        "adv": make_openai_app(**ADV_SETTINGS),
        "strict": make_openai_app(strict_gen, **STRICT_SETTINGS),
    }


def _run(apps: dict, scenario):
    """``scenario(http)`` in one event loop, ``http[app]`` an AsyncClient of each app."""

    async def run():
        clients = {
            name: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120
            )
            for name, app in apps.items()
        }
        try:
            return await scenario(clients)
        finally:
            for http in clients.values():
                await http.aclose()

    return asyncio.run(run())


def _assert_openai_error(r: httpx.Response, status: int, param: str | None) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param:
        assert (error["param"] or "").startswith(param), error


def test_every_bad_request_is_a_4xx_and_a_good_stream_beside_them_is_unchanged(apps):
    good = {"model": MODEL, "prompt": "The list of", "max_tokens": 40, "temperature": 0}

    async def scenario(http):
        alone = await stream_text(http["adv"], "/v1/completions", good)
        beside = asyncio.create_task(stream_text(http["adv"], "/v1/completions", good))
        bad = await asyncio.gather(
            *(post(http[app], f"/v1/{route}", body) for app, route, body, _, _ in BAD)
        )
        return alone, await beside, bad

    alone, beside, responses = _run(apps, scenario)
    for (*_, status, param), r in zip(BAD, responses):
        _assert_openai_error(r, status, param)
    assert beside == alone and alone


def test_a_tiny_temperature_is_greedy_not_nan(apps):
    with TestClient(apps["adv"]) as http:
        greedy = http.post("/v1/completions", json=cmpl(max_tokens=12, temperature=0)).json()
        tiny = http.post("/v1/completions", json=cmpl(max_tokens=12, temperature=1e-40))
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_a_template_error_refuses_only_that_request(apps):
    with TestClient(apps["strict"]) as http:
        system = {**chat(), "messages": [{"role": "system", "content": "s"}]}
        refused = http.post("/v1/chat/completions", json=system)
        assert "system messages are not supported" in refused.json()["error"]["message"]
        assert http.post("/v1/chat/completions", json=chat(max_tokens=2)).status_code == 200


def test_chunked_bodies_are_read_up_to_the_limit(apps):
    async def scenario(http):
        ok = await post(http["adv"], "/v1/completions", cmpl(), chunked=True)
        big = await post(http["adv"], "/v1/completions", cmpl(prompt="x" * 300_000), chunked=True)
        return ok, big

    ok, big = _run(apps, scenario)
    assert "content-length" not in ok.request.headers
    assert ok.status_code == 200, ok.text
    _assert_openai_error(big, 413, None)
