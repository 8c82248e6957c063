"""A real Ray Serve app on the local Ray cluster, serving a tiny export over HTTP, queried
with the `openai` client and raw HTTP for the error contract."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from ray import serve
from serve_apps import deploy, small_app

from schemas.serving import ServeConfig

MODEL = "tiny-gpt2"


@pytest.fixture(scope="module")
def server(ray_cluster, tiny_export):
    """Deploys the apps this module needs side by side, each under its own route prefix."""
    small = small_app(tiny_export)
    apps = {
        "main": ServeConfig(**small, max_body_bytes=20_000),
        "secure": ServeConfig(**small, api_key="sekrit"),
        "tight": ServeConfig(
            **{**small, "max_batch_size": 1},
            max_ongoing_requests=1,
            max_queued_requests=0,
            retry_after_s=2,
        ),
    }
    yield deploy(apps)
    serve.shutdown()


@pytest.fixture
def base(server):
    return f"{server}/main/v1"


@pytest.fixture
def client(base):
    return openai.OpenAI(base_url=base, api_key="unused", max_retries=0)


def test_models_list(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion_with_usage(client, tiny_tokenizer):
    prompt = "Return the number of items"
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, temperature=0)
    choice = out.choices[0]
    assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens == len(tiny_tokenizer(prompt)["input_ids"])
    assert 1 <= out.usage.completion_tokens <= 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, temperature=0)
    assert again.choices[0].text == choice.text  # greedy is deterministic


def test_completion_prompt_list(client):
    out = client.completions.create(model=MODEL, prompt=["The", "A list"], max_tokens=3)
    assert [c.index for c in out.choices] == [0, 1]


def test_streamed_completion_matches_unstreamed(client):
    kwargs = dict(model=MODEL, prompt="The module", max_tokens=6, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_sse_wire_format_ends_with_done(base):
    body = {"model": MODEL, "prompt": "The", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{base}/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_chat_completion_plain_and_streamed(client):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What does len do?"},
    ]
    out = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=5, temperature=0
    )
    assert out.choices[0].message.role == "assistant"
    assert out.usage.completion_tokens >= 1
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=5, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == out.choices[0].message.content


def _good(base) -> None:
    # `user` and a best_of of 1 change nothing generated: accepted.
    body = {"model": MODEL, "prompt": "The", "max_tokens": 2, "user": "u1", "best_of": 1}
    r = httpx.post(f"{base}/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] is not None


BAD = [
    ("completions", b"{not json", 400, None),
    ("completions", {"model": MODEL, "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("completions", {"model": MODEL, "prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ("completions", {"model": MODEL, "prompt": "x", "top_p": 0}, 400, "top_p"),
    ("completions", {"model": MODEL, "prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("completions", {"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("completions", {"model": MODEL, "prompt": "", "max_tokens": 2}, 400, "prompt"),
    ("completions", {"model": MODEL, "max_tokens": 2}, 400, "prompt"),
    ("completions", {"model": MODEL, "prompt": "The " * 40, "max_tokens": 40}, 400, "prompt"),
    ("chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("chat/completions", {"model": MODEL, "messages": [{"role": "user"}]}, 400, "messages"),
    ("completions", {"model": "gpt-9", "prompt": "x"}, 404, "model"),
    # Set to something not implemented: refused, never silently ignored.
    ("completions", {"model": MODEL, "prompt": "x", "logit_bias": {"5": 100}}, 400, "logit_bias"),
    ("completions", {"model": MODEL, "prompt": "x", "best_of": 2}, 400, "best_of"),
    ("completions", {"model": MODEL, "prompt": "x", "suffix": "y"}, 400, "suffix"),
    (
        "chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function"}],
        },
        400,
        "tools",
    ),
    (
        "chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        },
        400,
        "response_format",
    ),
    ("completions", {"model": MODEL, "prompt": "x" * 30_000}, 413, None),
    (
        "completions",
        {"model": MODEL, "prompt": "x", "temperature": 9, "stream": True},
        400,
        "temperature",
    ),
]


@pytest.mark.parametrize("route,body,status,param", BAD)
def test_errors_have_openai_shape_and_server_keeps_serving(base, route, body, status, param):
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    r = httpx.post(f"{base}/{route}", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert not r.headers["content-type"].startswith("text/event-stream")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param:
        assert error["param"] is not None and error["param"].startswith(param), error
    _good(base)


def test_context_error_names_the_numbers(base):
    r = httpx.post(
        f"{base}/completions",
        timeout=30,
        json={"model": MODEL, "prompt": "The " * 40, "max_tokens": 40},
    )
    message = r.json()["error"]["message"]
    assert "40" in message and "64" in message, message


@pytest.mark.parametrize(
    "method,route", [("GET", "models"), ("POST", "completions"), ("POST", "chat/completions")]
)
def test_api_key_required_when_set(server, method, route):
    url = f"{server}/secure/v1/{route}"
    body = {
        "model": MODEL,
        "prompt": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
    }
    r = httpx.request(method, url, json=body if method == "POST" else None, timeout=30)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    ok = httpx.request(
        method,
        url,
        json=body if method == "POST" else None,
        timeout=30,
        headers={"Authorization": "Bearer sekrit"},
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["openapi.json", "docs", "redoc"])
def test_no_schema_or_docs_pages_even_behind_a_key(server, path):
    for app in ("main", "secure"):
        r = httpx.get(f"{server}/{app}/{path}", timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] is None, r.text


def test_lower_case_bearer_scheme_is_accepted(server):
    r = httpx.get(f"{server}/secure/v1/models", headers={"Authorization": "bearer sekrit"})
    assert r.status_code == 200, r.text


def test_full_queue_answers_429_with_retry_after(server):
    url = f"{server}/tight/v1/completions"
    body = {"model": MODEL, "prompt": "The", "max_tokens": 40, "temperature": 1.0}

    async def burst():
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(http.post(url, json=body) for _ in range(8)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["code"] == "queue_full"
    assert httpx.post(url, json={**body, "max_tokens": 2}, timeout=30).status_code == 200


def test_300_requests_at_concurrency_32(base):
    async def run():
        client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
        gate = asyncio.Semaphore(32)

        async def one(i: int):
            async with gate:
                if i % 3 == 0:
                    return await client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"q{i}"}],
                        max_tokens=4,
                        seed=i,
                    )
                return await client.completions.create(
                    model=MODEL, prompt=f"Item {i}", max_tokens=4, seed=i
                )

        try:
            return await asyncio.gather(*(one(i) for i in range(300)), return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    for r in results:
        assert r.usage.completion_tokens >= 1 and len(r.choices) == 1
        assert r.choices[0].finish_reason in ("stop", "length")


def test_stream_usage_when_asked(client):
    kwargs = dict(model=MODEL, prompt="Return the", max_tokens=6, temperature=0)
    whole = client.completions.create(**kwargs)
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].text for c in chunks[:-1]) == whole.choices[0].text
