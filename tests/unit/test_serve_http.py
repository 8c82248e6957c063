"""The replica's HTTP contract without Ray Serve: the router and the serving classes over a
real Generator and Scheduler, driven by FastAPI's TestClient (and by the `openai` client
through it). Every error is answered in the OpenAI shape with its real status: 400 for a bad
request, 401 without the key, 404 for an unknown model or page, 413 past the body limit, 429
with Retry-After when the replica is full. tests/integration/test_serve.py asks the same of
the real Serve app, once per kind."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from serve.api.metrics import ServingMetrics
from serve.api.protocol import UNSUPPORTED_FIELDS

MODEL = "tiny-gpt2"


@pytest.fixture(scope="module")
def main(make_openai_app):
    with TestClient(make_openai_app(max_batch_size=8, max_body_bytes=20_000)) as http:
        yield http


@pytest.fixture(scope="module")
def secure(make_openai_app):
    with TestClient(make_openai_app(max_batch_size=8, api_key="sekrit")) as http:
        yield http


@pytest.fixture
def client(main):
    return openai.OpenAI(
        base_url=f"{main.base_url}/v1", api_key="unused", max_retries=0, http_client=main
    )


def test_completion_prompt_list(client):
    out = client.completions.create(model=MODEL, prompt=["The", "A list"], max_tokens=3)
    assert [c.index for c in out.choices] == [0, 1]


def test_sse_wire_format_ends_with_done(main):
    body = {"model": MODEL, "prompt": "The", "max_tokens": 4, "stream": True}
    with main.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def _good(http) -> None:
    # `user` and a best_of of 1 change nothing generated: accepted.
    body = {"model": MODEL, "prompt": "The", "max_tokens": 2, "user": "u1", "best_of": 1}
    r = http.post("/v1/completions", json=body)
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
    ("completions", {"model": MODEL, "prompt": "x", "logit_bias": {"x5": 1}}, 400, "logit_bias"),
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
    # vLLM's bounds on its sampling controls.
    *[
        ("completions", {"model": MODEL, "prompt": "x", name: value}, 400, name)
        for name, value in [
            ("top_k", -2),
            ("min_p", 1.5),
            ("repetition_penalty", 0),
            ("presence_penalty", 2.5),
            ("frequency_penalty", -2.5),
            ("min_tokens", 99),
            ("n", 0),
            ("n", 9),  # serve.max_n is 8
            ("stop_token_ids", [10**6]),
            ("logit_bias", {"-1": 5}),
        ]
    ],
    ("completions", {"model": MODEL, "prompt": "x" * 30_000}, 413, None),
    (
        "completions",
        {"model": MODEL, "prompt": "x", "temperature": 9, "stream": True},
        400,
        "temperature",
    ),
]


@pytest.mark.parametrize("route,body,status,param", BAD)
def test_errors_have_openai_shape_and_server_keeps_serving(main, route, body, status, param):
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    r = main.post(f"/v1/{route}", **kwargs)
    assert r.status_code == status, r.text
    assert not r.headers["content-type"].startswith("text/event-stream")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param:
        assert error["param"] is not None and error["param"].startswith(param), error
    _good(main)


def _other_than(value):
    """A value that is not ``value`` (a field's harmless one), of a plausible kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return "x"


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_FIELDS))
def test_every_unimplemented_field_is_refused_by_name(main, name):
    harmless = UNSUPPORTED_FIELDS[name]
    for route, body in (
        ("completions", {"model": MODEL, "prompt": "x", "max_tokens": 1}),
        ("chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
    ):
        r = main.post(f"/v1/{route}", json={**body, name: _other_than(harmless)})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == name
        assert r.json()["error"]["code"] == "unsupported_parameter"
        # Set to what this server does anyway (or null), it changes nothing: accepted.
        for value in {repr(v): v for v in (harmless, None)}.values():
            ok = main.post(f"/v1/{route}", json={**body, name: value, "max_tokens": 1})
            assert ok.status_code == 200, (name, value, ok.text)


def test_controls_sent_as_null_take_their_defaults(main):
    nulls = dict.fromkeys(["n", "top_k", "min_p", "presence_penalty", "repetition_penalty"])
    body = {"model": MODEL, "prompt": "The", "max_tokens": 3, "temperature": 0}
    r = main.post("/v1/completions", json={**body, **nulls, "logit_bias": None})
    assert r.status_code == 200, r.text
    assert (
        r.json()["choices"][0]["text"]
        == main.post("/v1/completions", json=body).json()["choices"][0]["text"]
    )


def test_n_choices_plain_and_streamed(client):
    kwargs = dict(model=MODEL, prompt="The list", max_tokens=6, temperature=1.0, seed=11)
    out = client.completions.create(**kwargs, n=3)
    assert [c.index for c in out.choices] == [0, 1, 2]
    texts = [c.text for c in out.choices]
    assert len(set(texts)) > 1  # choice j is seeded with seed + j: they differ
    # Each choice is reproducible: choice 1 of seed 11 is choice 0 of seed 12.
    assert client.completions.create(**{**kwargs, "seed": 12}).choices[0].text == texts[1]
    assert out.usage.completion_tokens == 18  # no end token in the tiny export's reach
    streamed = {i: "" for i in range(3)}
    for chunk in client.completions.create(**kwargs, n=3, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert list(streamed.values()) == texts
    # Two prompts x n=2: choice i answers prompt i // 2.
    two = client.completions.create(
        model=MODEL, prompt=["The", "A list"], max_tokens=3, temperature=0, n=2
    )
    assert [c.text for c in two.choices][::2] == [
        client.completions.create(model=MODEL, prompt=p, max_tokens=3, temperature=0)
        .choices[0]
        .text
        for p in ("The", "A list")
    ]


def test_chat_n_choices_plain_and_streamed(client):
    kwargs = dict(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, seed=3, n=2
    )
    out = client.chat.completions.create(**kwargs)
    assert [c.index for c in out.choices] == [0, 1]
    streamed = {0: "", 1: ""}
    roles = set()
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            roles.add((choice.index, choice.delta.role))
            streamed[choice.index] += choice.delta.content or ""
    assert {(0, "assistant"), (1, "assistant")} <= roles
    assert [streamed[0], streamed[1]] == [c.message.content for c in out.choices]


def test_context_error_names_the_numbers(main):
    r = main.post("/v1/completions", json={"model": MODEL, "prompt": "The " * 40, "max_tokens": 40})
    message = r.json()["error"]["message"]
    assert "40" in message and "64" in message, message


@pytest.mark.parametrize(
    "method,route", [("GET", "models"), ("POST", "completions"), ("POST", "chat/completions")]
)
def test_api_key_required_when_set(secure, method, route):
    url = f"/v1/{route}"
    body = {
        "model": MODEL,
        "prompt": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
    }
    r = secure.request(method, url, json=body if method == "POST" else None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    ok = secure.request(
        method,
        url,
        json=body if method == "POST" else None,
        headers={"Authorization": "Bearer sekrit"},
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["openapi.json", "docs", "redoc"])
def test_no_schema_or_docs_pages_even_behind_a_key(main, secure, path):
    for http in (main, secure):
        r = http.get(f"/{path}")
        assert r.status_code == 404 and r.json()["error"]["code"] is None, r.text


def test_lower_case_bearer_scheme_is_accepted(secure):
    r = secure.get("/v1/models", headers={"Authorization": "bearer sekrit"})
    assert r.status_code == 200, r.text


def test_full_queue_answers_429_with_retry_after(make_openai_app):
    app = make_openai_app(
        max_batch_size=1, max_ongoing_requests=1, max_queued_requests=0, retry_after_s=2
    )
    body = {"model": MODEL, "prompt": "The", "max_tokens": 40, "temperature": 1.0}

    async def burst():
        # One event loop for all eight, so that they really are in flight together.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(
                *(http.post("/v1/completions", json=body) for _ in range(8))
            )
            return responses, await http.post("/v1/completions", json={**body, "max_tokens": 2})

    responses, after = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["code"] == "queue_full"
    assert after.status_code == 200


def test_stream_usage_when_asked(client):
    kwargs = dict(model=MODEL, prompt="Return the", max_tokens=6, temperature=0)
    whole = client.completions.create(**kwargs)
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].text for c in chunks[:-1]) == whole.choices[0].text


def test_tokenizer_endpoints(main, gen):
    text = "Return the list"
    r = main.post("/tokenize", json={"model": MODEL, "prompt": text, "add_special_tokens": False})
    assert r.json() == {
        "count": len(gen.encode(text)),
        "max_model_len": 64,
        "tokens": gen.encode(text),
    }
    assert main.post("/detokenize", json={"tokens": gen.encode(text)}).json() == {"prompt": text}
    messages = [{"role": "user", "content": "hi"}]
    chat = main.post("/tokenize", json={"messages": messages}).json()
    rendered = gen.apply_chat_template(messages)
    assert chat["tokens"] == gen.tokenizer.encode(rendered, add_special_tokens=False)
    info = main.get("/tokenizer_info").json()
    assert info["model_max_length"] == 64 and info["vocab_size"] == len(gen.tokenizer)
    for route, body, status, param in [
        ("tokenize", {"prompt": "x", "messages": messages}, 400, "prompt"),
        ("tokenize", {}, 400, "prompt"),
        ("tokenize", {"model": "gpt-9", "prompt": "x"}, 404, "model"),
        ("detokenize", {"tokens": [10**6]}, 400, "tokens"),
    ]:
        r = main.post(f"/{route}", json=body)
        assert (r.status_code, r.json()["error"]["param"]) == (status, param), r.text


def test_metrics_count_answers_tokens_and_in_flight(make_openai_app):
    seen: dict[str, list] = {"requests": [], "tokens": [], "ttft": [], "in_flight": []}
    metrics = ServingMetrics(
        count_request=lambda route, status: seen["requests"].append((route, status)),
        observe_time_to_first_token_s=seen["ttft"].append,
        count_generated_tokens=seen["tokens"].append,
        set_in_flight=seen["in_flight"].append,
    )
    with TestClient(make_openai_app(metrics=metrics)) as http:
        answer = http.post("/v1/completions", json={"model": MODEL, "prompt": "The"})
        assert answer.status_code == 200
        assert http.post("/v1/completions", json={"model": MODEL}).status_code == 400
        assert http.get("/health").json() == {"status": "ok", "in_flight": 0}
    assert seen["requests"] == [("completions", "200"), ("completions", "400")]
    # The random tiny model may sample its end-of-text before default_max_tokens (16): the
    # counter must hold what the answer's usage says was generated, whatever that was.
    generated = answer.json()["usage"]["completion_tokens"]
    assert 1 <= generated <= 16 and seen["tokens"] == [generated] and len(seen["ttft"]) == 1
    assert seen["in_flight"] == [1, 0]
