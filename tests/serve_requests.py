"""Requests the serving tests of both tiers send: body builders, the adversarial bad
requests (each with the status and the error's param it must get), and the async helpers
that post them and read streams. The unit tier sends them all to the router
(tests/unit/test_serve_adversarial.py); the integration tier's soak mixes the "adv" ones
into real traffic on a real Serve replica (tests/integration/test_serve.py)."""

from __future__ import annotations

import json

import httpx

MODEL = "tiny-gpt2"

# A chat template that refuses system messages, as some real templates do.
STRICT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('system messages are not supported') }}{% endif %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"
)

# ServeConfig settings of the apps the adversarial requests are aimed at ("adv" and
# "strict"; the strict app also serves an export whose chat template is STRICT_TEMPLATE).
ADV_SETTINGS = dict(max_batch_size=16, max_body_bytes=200_000, max_prompts_per_request=8)
STRICT_SETTINGS = dict(max_batch_tokens=48)


def chat(content: str = "hi", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def cmpl(**extra) -> dict:
    return {"model": MODEL, "prompt": "The", "max_tokens": 2, **extra}


def raw(text: str) -> bytes:
    return text.encode()


def deep(levels: int) -> bytes:
    return raw(f'{{"model": "{MODEL}", "prompt": "x", "user": {"[" * levels}1{"]" * levels}}}')


def encode(body: dict | bytes) -> bytes:
    """A body as sent: dicts as JSON, infinities written as JSON's Infinity."""
    return json.dumps(body, allow_nan=True).encode() if isinstance(body, dict) else body


# (app, route, body, status, the error's param prefix or None)
BAD = [
    ("adv", "completions", cmpl(seed=2**64), 400, "seed"),
    ("adv", "completions", cmpl(seed=-(2**63) - 1), 400, "seed"),
    ("adv", "completions", {"model": MODEL, "prompt": ["x"] * 250}, 400, "prompt"),
    ("adv", "completions", cmpl(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("adv", "completions", cmpl(stop="z" * 1000), 400, "stop"),
    ("adv", "completions", deep(64), 400, "user"),
    ("adv", "completions", raw("[" * 150_000), 400, None),
    ("adv", "completions", raw(f'{{"model": "{MODEL}", "prompt": "\\ud800"}}'), 400, "prompt"),
    (
        "adv",
        "chat/completions",
        raw(json.dumps(chat()).replace("hi", "\\udfff")),
        400,
        "messages",
    ),
    ("adv", "completions", b'{"model": "tiny-gpt2", "prompt": "\xff\xfe"}', 400, None),
    ("adv", "completions", cmpl(n=10**6), 400, "n"),
    ("adv", "completions", cmpl(logit_bias={"10000000": 5}), 400, "logit_bias"),
    ("adv", "completions", cmpl(presence_penalty=2.5), 400, "presence_penalty"),
    ("adv", "completions", cmpl(max_tokens=10**30), 400, "max_tokens"),
    ("adv", "completions", cmpl(temperature=float("inf")), 400, "temperature"),
    (
        "strict",
        "chat/completions",
        {**chat(), "messages": [{"role": "system", "content": "s"}]},
        400,
        "messages",
    ),
    ("strict", "completions", cmpl(max_tokens=60), 400, "prompt"),  # > max_batch_tokens=48
]


async def _chunked(body: bytes, piece: int = 4096):
    for i in range(0, len(body), piece):
        yield body[i : i + piece]


async def post(http, url: str, body, chunked: bool = False) -> httpx.Response:
    """``body`` as JSON; ``chunked``: sent in pieces, with no Content-Length."""
    body = encode(body)
    content = _chunked(body) if chunked else body
    return await http.post(url, content=content, headers={"content-type": "application/json"})


async def stream_text(http, url: str, body: dict) -> str:
    """The text of a streamed completion; an error event in the stream fails the test."""
    text = []
    async with http.stream("POST", url, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                assert "error" not in event, event
                text.append(event["choices"][0]["text"])
    return "".join(text)


# vLLM's sampling controls beyond OpenAI's: the openai client sends them only in extra_body.
VLLM_EXTRAS = {"top_k", "min_p", "repetition_penalty", "min_tokens", "stop_token_ids"}


def openai_kwargs(**controls) -> dict:
    """Sampling controls as the openai client's create() takes them."""
    extra = {k: controls.pop(k) for k in list(controls) if k in VLLM_EXTRAS}
    return controls | ({"extra_body": extra} if extra else {})


def generated(client, prompt: str, max_tokens: int = 8, **controls):
    """The text and the generated tokens' texts of one completion (logprobs name them)."""
    out = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, logprobs=0, **openai_kwargs(**controls)
    )
    return out.choices[0].text, out.choices[0].logprobs.tokens


def in_flight(replica_url: str) -> int:
    """The requests a replica holds now, from its /health."""
    return httpx.get(f"{replica_url}/health", timeout=10).json()["in_flight"]
