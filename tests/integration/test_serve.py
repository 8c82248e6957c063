"""The real Serve app, served as `make serve` serves it (its ingress: HAProxy, forwarding to
each replica's own HTTP port), over real HTTP: the `openai` client through the port users
call (models, completion, chat, streaming, an error in the OpenAI shape, the key refused),
300 requests at concurrency 32 through it, the key wanted at the replica's own port too, and
a soak at that port of mixed good, bad and abandoned requests that leaves no 5xx and no
leaked in-flight slot. Two LoRA adapters trained on different texts ride on the same app:
listed with their parent, and mixed with the base in concurrent requests.

What needs no Ray Serve (the whole HTTP error contract, streaming's wire format, adversarial
requests, the bounds of every sampling control) runs in the unit tier on the same app:
tests/unit/test_serve_http.py, test_serve_adversarial.py.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx
import openai
import psutil
import pytest
import ray
from lora_adapters import ADAPTER_TEXTS, train_adapter
from ray import serve
from serve_apps import deploy, small_app
from serve_requests import (
    ADV_SETTINGS,
    BAD,
    MODEL,
    chat,
    cmpl,
    generated,
    in_flight,
    openai_kwargs,
    post,
    stream_text,
)

from cluster.serve import replica_urls
from schemas.serving import LoraServeConfig, ServeConfig

KEY = "sekrit"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(ray_cluster, tiny_export, tmp_path_factory) -> dict:
    """The app's base URL through the port `make serve` prints ("port": its ingress) and at
    its replica's own HTTP port ("replica"). Serve listens on every interface, as on a
    cluster. The app takes the adversarial requests' settings, a key, and two adapters."""
    root = tmp_path_factory.mktemp("adapters")
    adapters = {
        name: train_adapter(tiny_export, texts, root / name, seed=i)
        for i, (name, texts) in enumerate(ADAPTER_TEXTS.items())
    }
    lora = LoraServeConfig(adapters=adapters)
    args = ServeConfig(**{**small_app(tiny_export), **ADV_SETTINGS}, api_key=KEY, lora=lora)
    root = deploy({"main": args}, host="0.0.0.0")
    yield {"port": f"{root}/main", "replica": f"{replica_urls('main', '127.0.0.1')[0]}/main"}
    serve.shutdown()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server['port']}/v1", api_key=KEY, max_retries=0)


# ---- the openai client through the port users call ---------------------------------------


def test_models_list_the_base_and_its_adapters(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL, *ADAPTER_TEXTS]
    assert [getattr(m, "parent", None) for m in models] == [None] + [MODEL] * len(ADAPTER_TEXTS)


def test_mixed_adapter_requests_equal_each_alone(server):
    """Greedy completions for the base and each adapter, sent one at a time, then all at
    once (so they decode in one batch): the same texts."""
    aclient = openai.AsyncOpenAI(base_url=f"{server['port']}/v1", api_key=KEY, max_retries=0)
    models = [MODEL, *ADAPTER_TEXTS, f"{MODEL}:beta"]
    prompts = ["The list of", "Return the value", "Raise a"]
    jobs = [(m, p) for m in models for p in prompts]

    async def one(model, prompt):
        r = await aclient.completions.create(
            model=model, prompt=prompt, max_tokens=8, temperature=0
        )
        return r.choices[0].text

    async def run():
        alone = [await one(m, p) for m, p in jobs]
        together = await asyncio.gather(*(one(m, p) for m, p in jobs))
        return alone, together

    alone, together = asyncio.run(run())
    assert together == alone
    by_model = {m: tuple(alone[i * 3 : i * 3 + 3]) for i, m in enumerate(models)}
    assert by_model["alpha"] != by_model[MODEL] != by_model["beta"]  # the adapters change text
    assert by_model["beta"] == by_model[f"{MODEL}:beta"]


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


def test_streamed_completion_matches_unstreamed(client):
    kwargs = dict(model=MODEL, prompt="The module", max_tokens=6, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


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


def test_a_bad_request_is_an_openai_error(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="x", temperature=2.5)
    assert bad.value.status_code == 400
    assert set(bad.value.body) == {"message", "type", "param", "code"}
    assert (bad.value.type, bad.value.param) == ("invalid_request_error", "temperature")
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2).choices


def test_the_key_is_refused_when_wrong_or_missing(server):
    wrong = openai.OpenAI(base_url=f"{server['port']}/v1", api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.status_code == 401
    assert refused.value.response.headers["www-authenticate"] == "Bearer"
    assert refused.value.type == "authentication_error"
    missing = httpx.post(f"{server['port']}/v1/completions", json=cmpl(), timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"


def test_300_requests_at_concurrency_32(server):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{server['port']}/v1", api_key=KEY, max_retries=0)
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


# ---- sampling controls, with the openai client (vLLM's extras go in extra_body) ----------


def test_top_k_1_at_temperature_1_is_greedy(client):
    greedy = generated(client, "The list of", temperature=0)
    sampled = [generated(client, "The list of", temperature=1.0, top_k=1, seed=s) for s in (1, 2)]
    assert sampled == [greedy, greedy]


def test_logit_bias_bans_and_forces_tokens(client, tiny_tokenizer):
    text, _ = generated(client, "Return the", temperature=0)
    banned = set(tiny_tokenizer(text)["input_ids"])
    ban = {str(t): -100 for t in banned}
    _, emitted = generated(client, "Return the", temperature=0, logit_bias=ban)
    assert not {tiny_tokenizer.decode([t]) for t in banned} & set(emitted)
    forced = tiny_tokenizer("q")["input_ids"][0]
    text, _ = generated(
        client, "Return the", temperature=1.0, seed=1, logit_bias={str(forced): 100}
    )
    assert text == "q" * 8


def test_presence_penalty_repeats_fewer_tokens(client):
    prompt = "the value the value the value the value"
    repeats = []
    for penalty in (0.0, 2.0):
        _, tokens = generated(client, prompt, 12, temperature=0, presence_penalty=penalty)
        repeats.append(len(tokens) - len(set(tokens)))
    assert repeats[1] < repeats[0], repeats


def test_n_3_returns_3_choices_plain_and_streamed(client):
    kwargs = dict(model=MODEL, prompt="The module", max_tokens=4, seed=5, n=3)
    out = client.completions.create(**kwargs)
    assert [c.index for c in out.choices] == [0, 1, 2]
    streamed = {}
    for chunk in client.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {c.index: c.text for c in out.choices}


def test_different_controls_in_one_batch_each_equal_their_solo_run(server):
    """Greedy requests with different controls, sent at once so they share the running
    batch, answer what each answers alone."""
    controls = [
        {},
        {"repetition_penalty": 1.8},
        {"presence_penalty": 2.0, "frequency_penalty": 0.5},
        {"top_k": 1, "temperature": 1.0, "seed": 3},
        {"logit_bias": {"40": 5}},
    ]

    async def ask(client, extra):
        body = {"prompt": "Raise a ValueError if", "max_tokens": 8, "temperature": 0, **extra}
        out = await client.completions.create(model=MODEL, **openai_kwargs(**body))
        return out.choices[0].text

    async def run():
        client = openai.AsyncOpenAI(base_url=f"{server['port']}/v1", api_key=KEY, max_retries=0)
        try:
            together = await asyncio.gather(*(ask(client, c) for c in controls))
            alone = [await ask(client, c) for c in controls]
            return together, alone
        finally:
            await client.close()

    together, alone = asyncio.run(run())
    assert together == alone
    assert len(set(together)) > 2  # the controls changed what was generated


# ---- at the replica's own port ----------------------------------------------------------------


def test_a_replicas_own_port_wants_the_key_from_any_address(server):
    """Under the HAProxy ingress every replica listens on an HTTP port of its own, on every
    interface when Serve's host is 0.0.0.0 (HAProxy on other nodes must reach it): the key
    is checked there as on the port users call, from an address that is not loopback."""
    port = urlsplit(server["replica"]).port
    listening = {
        conn.laddr.ip
        for proc in psutil.process_iter(["cmdline"])
        if " ".join(proc.info["cmdline"] or []).startswith("ray::ServeReplica:main:")
        for conn in proc.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }
    assert listening == {"0.0.0.0"}
    url = f"http://{ray.util.get_node_ip_address()}:{port}/main/v1"
    for headers in ({}, {"Authorization": "Bearer guess"}):
        models = httpx.get(f"{url}/models", headers=headers, timeout=30)
        generate = httpx.post(f"{url}/completions", json=cmpl(), headers=headers, timeout=30)
        for refused in (models, generate):
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "invalid_api_key"
    answered = httpx.post(f"{url}/completions", json=cmpl(), headers=AUTH, timeout=30)
    assert answered.status_code == 200 and answered.json()["choices"]


def test_soak_mixed_bad_and_abandoned_requests(server):
    """300 requests at concurrency 32: one in five bad (mixed kinds), 50 streams whose
    clients leave early (before the response starts, or after its first event)."""
    url = f"{server['replica']}/v1"
    bad_kinds = [(route, body, status) for app, route, body, status, _ in BAD if app == "adv"]
    abandoned = set([i for i in range(300) if i % 5 != 0][1::4][:50])
    outcomes: dict[str, list] = {"good": [], "bad": [], "left": []}

    async def one(http, i: int) -> None:
        if i % 5 == 0:
            route, body, status = bad_kinds[(i // 5) % len(bad_kinds)]
            r = await post(http, f"{url}/{route}", body)
            outcomes["bad"].append((r.status_code, status, r.headers["content-type"]))
        elif i in abandoned:
            body = cmpl(max_tokens=40, seed=i, stream=True)
            if i % 2:
                with pytest.raises(asyncio.TimeoutError):  # gone before the first byte
                    await asyncio.wait_for(post(http, f"{url}/completions", body), 0.01)
            else:
                async with http.stream("POST", f"{url}/completions", json=body) as r:
                    async for _ in r.aiter_lines():
                        break  # gone after the first event
            outcomes["left"].append(i)
        elif i % 3 == 0:
            text = await stream_text(http, f"{url}/completions", cmpl(max_tokens=6, seed=i))
            outcomes["good"].append(200 if text is not None else 0)
        else:
            route, body = (
                ("chat/completions", chat(f"q{i}", max_tokens=5, seed=i))
                if i % 2
                else ("completions", cmpl(prompt=f"Item {i}", max_tokens=5, seed=i))
            )
            r = await post(http, f"{url}/{route}", body)
            ok = r.status_code == 200 and r.json()["choices"][0]["finish_reason"]
            outcomes["good"].append(200 if ok else (r.status_code, r.text[:200]))

    async def run():
        gate = asyncio.Semaphore(32)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=120, limits=limits, headers=AUTH) as http:

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
    while in_flight(server["replica"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert in_flight(server["replica"]) == 0
