"""The OpenAI surface lm-evaluation-harness needs, on a real Ray Serve app: token-id prompts,
echo, logprobs in the legacy and chat shapes, scoring with max_tokens 0, the tokenizer
endpoints; then lm-eval itself, run as a library against the endpoint, agreeing with its
Hugging Face backend on the same export document by document."""

from __future__ import annotations

import httpx
import lm_eval
import openai
import pytest
import torch
from ray import serve
from serve_apps import deploy, small_app
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluation.lm_eval_runner import task_manager
from schemas.evaluation import LmEvalConfig
from schemas.serving import ServeConfig

MODEL = "tiny-gpt2"
CONTEXT = 256
TEXT = "Return the number of items in the list, and raise an error"


@pytest.fixture(scope="module")
def export(make_tiny_export, tmp_path_factory):
    """The tiny GPT-2 with 256 positions: lm-eval's items fit whole, so no backend truncates
    (each truncates an over-long item its own way, which would compare truncations)."""
    return make_tiny_export(tmp_path_factory.mktemp("lm-eval-export") / MODEL, CONTEXT)


@pytest.fixture(scope="module")
def server(ray_cluster, export):
    small = small_app(export)
    yield deploy({"main": ServeConfig(**small), "secure": ServeConfig(**small, api_key="sekrit")})
    serve.shutdown()


@pytest.fixture(scope="module")
def hf(export):
    return AutoModelForCausalLM.from_pretrained(export).eval(), AutoTokenizer.from_pretrained(
        export
    )


def _direct(hf, ids: list[int]) -> list[float]:
    model, _ = hf
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return [logp[j - 1, ids[j]].item() for j in range(1, len(ids))]


def _post(server, path: str, payload: dict, app: str = "main", key: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server}/{app}{path}", json=payload, headers=headers, timeout=60)


# --- the serving surface ----------------------------------------------------------------------


def test_echoed_prompt_logprobs_match_a_direct_forward(server, hf):
    ids = hf[1](TEXT)["input_ids"]
    body = {"model": MODEL, "prompt": ids, "echo": True, "logprobs": 2, "max_tokens": 0}
    out = _post(server, "/v1/completions", body).json()
    choice = out["choices"][0]
    assert choice["text"] == hf[1].decode(ids) and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert len(lp["tokens"]) == len(ids) == len(lp["text_offset"])
    assert lp["tokens"] == [hf[1].decode([t]) for t in ids]
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    assert lp["token_logprobs"][1:] == pytest.approx(_direct(hf, ids), abs=1e-4)
    assert all(len(top) <= 2 for top in lp["top_logprobs"][1:])
    assert out["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": 0,
        "total_tokens": len(ids),
    }


def test_token_id_batches_text_echo_and_one_new_token(server, hf):
    a, b = hf[1]("Return the")["input_ids"], hf[1]("A list of")["input_ids"]
    out = _post(server, "/v1/completions", {"model": MODEL, "prompt": [a, b], "max_tokens": 2})
    assert [c["index"] for c in out.json()["choices"]] == [0, 1]
    # What lm-eval sends for a log-likelihood: echo, logprobs 1, max_tokens 1, temperature 0.
    body = {
        "model": MODEL,
        "prompt": TEXT,
        "echo": True,
        "logprobs": 1,
        "max_tokens": 1,
        "temperature": 0,
    }
    choice = _post(server, "/v1/completions", body).json()["choices"][0]
    ids = hf[1](TEXT)["input_ids"]
    assert choice["text"].startswith(TEXT)
    lp = choice["logprobs"]["token_logprobs"]
    assert len(lp) == len(ids) + 1  # the prompt, then the new token
    assert lp[1 : len(ids)] == pytest.approx(_direct(hf, ids), abs=1e-4)
    # The greedy token is the most likely one: it is its own top 1.
    [(top_token, top_value)] = choice["logprobs"]["top_logprobs"][-1].items()
    assert top_value == pytest.approx(lp[-1]) and top_token == choice["logprobs"]["tokens"][-1]


def test_streamed_logprobs_add_up_to_the_unstreamed_ones(server):
    client = openai.OpenAI(base_url=f"{server}/main/v1", api_key="unused", max_retries=0)
    kwargs = dict(model=MODEL, prompt=TEXT, max_tokens=6, temperature=0, logprobs=2)
    whole = client.completions.create(**kwargs).choices[0]
    chunks = [c.choices[0] for c in client.completions.create(**kwargs, stream=True) if c.choices]
    streamed = [v for c in chunks if c.logprobs for v in c.logprobs.token_logprobs]
    assert streamed == pytest.approx(whole.logprobs.token_logprobs, abs=1e-6)
    assert "".join(c.text for c in chunks) == whole.text
    assert [t for c in chunks if c.logprobs for t in c.logprobs.tokens] == whole.logprobs.tokens


def test_chat_logprobs_in_the_chat_shape(server):
    client = openai.OpenAI(base_url=f"{server}/main/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What does `len` do?"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = out.choices[0].logprobs.content
    assert 1 <= len(content) <= 5
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.bytes == list(token.token.encode())
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)  # greedy


def test_tokenizer_endpoints_and_their_auth(server, hf):
    ids = hf[1](TEXT)["input_ids"]
    tokenized = _post(server, "/tokenize", {"prompt": TEXT, "add_special_tokens": False}).json()
    assert tokenized["tokens"] == ids and tokenized["count"] == len(ids)
    assert tokenized["max_model_len"] == CONTEXT
    chat = _post(server, "/tokenize", {"messages": [{"role": "user", "content": "Hi"}]}).json()
    rendered = (
        hf[1].apply_chat_template(
            [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
        )
        if hf[1].chat_template
        else None
    )
    if rendered:
        assert chat["tokens"] == hf[1](rendered, add_special_tokens=False)["input_ids"]
    assert _post(server, "/detokenize", {"tokens": ids}).json() == {"prompt": hf[1].decode(ids)}
    info = httpx.get(f"{server}/main/tokenizer_info", timeout=30).json()
    assert info["eos_token"] == hf[1].eos_token and info["model_max_length"] == CONTEXT
    assert info["chat_template"]  # the default one, which serving falls back to
    # Behind the same key as the API.
    assert _post(server, "/tokenize", {"prompt": "x"}, app="secure").status_code == 401
    assert httpx.get(f"{server}/secure/tokenizer_info", timeout=30).status_code == 401
    ok = _post(server, "/tokenize", {"prompt": "x"}, app="secure", key="sekrit")
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/v1/completions", {"prompt": "x", "logprobs": 6}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "logprobs": -1}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": [1, 2, 10**6]}, "prompt"),
        ("/v1/completions", {"prompt": [[1, 2], [-3]]}, "prompt"),
        ("/v1/completions", {"prompt": []}, "prompt"),
        ("/v1/completions", {"prompt": "x", "echo": "maybe"}, "echo"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3},
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        ("/tokenize", {}, "prompt"),
        ("/tokenize", {"prompt": "x", "bogus": 1}, "bogus"),
        ("/detokenize", {"tokens": [10**6]}, "tokens"),
    ],
)
def test_bad_values_of_the_new_fields_are_400s_in_the_openai_shape(server, path, payload, param):
    response = _post(server, path, {"model": MODEL, **payload})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and param in (error["param"] or "")
    # ...and the server goes on serving.
    assert (
        _post(
            server, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1}
        ).status_code
        == 200
    )


# --- lm-eval against the endpoint -------------------------------------------------------------

LIMIT = 12


def _per_document(results: dict, task: str) -> list[list[float]]:
    return [
        [resp[0] for resp in sample["filtered_resps"]]
        for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"])
    ]


def _run(model: str, model_args: dict, tasks: list[str], **extra) -> dict:
    spec = LmEvalConfig(tasks=tasks, limit=LIMIT)
    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        task_manager=task_manager(spec),
        limit=LIMIT,
        batch_size=4,
        bootstrap_iters=0,
        log_samples=True,
        **extra,
    )


@pytest.fixture(scope="module")
def hf_backend(export):
    args = {"pretrained": str(export), "device": "cpu", "dtype": "float32", "max_length": CONTEXT}
    return _run("hf", args, ["zeroray_docstring_mc"])


@pytest.mark.parametrize(
    "backend",
    [
        {"tokenizer_backend": "huggingface", "tokenized_requests": True},  # token-id prompts
        {"tokenizer_backend": "remote", "tokenized_requests": False},  # text + /tokenize
    ],
    ids=["token-ids", "text-remote-tokenizer"],
)
def test_lm_eval_through_the_endpoint_equals_its_hf_backend(server, export, hf_backend, backend):
    args = {
        "model": MODEL,
        "base_url": f"{server}/main/v1/completions",
        "max_length": CONTEXT,
        "num_concurrent": 2,
        **backend,
    }
    if backend["tokenizer_backend"] == "huggingface":
        args["tokenizer"] = str(export)
    served = _run("local-completions", args, ["zeroray_docstring_mc"])
    ours, theirs = (_per_document(r, "zeroray_docstring_mc") for r in (served, hf_backend))
    assert len(ours) == len(theirs) == LIMIT and all(len(d) == 4 for d in ours)
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, abs=1e-3)
    acc = served["results"]["zeroray_docstring_mc"]["acc,none"]
    assert acc == hf_backend["results"]["zeroray_docstring_mc"]["acc,none"]


def test_a_generation_task_through_chat_completions_completes(server):
    args = {
        "model": MODEL,
        "base_url": f"{server}/main/v1/chat/completions",
        "tokenizer_backend": None,
        "max_length": CONTEXT,
    }
    results = _run(
        "local-chat-completions", args, ["zeroray_docstring_qa"], apply_chat_template=True
    )
    assert results["results"]["zeroray_docstring_qa"]["exact_match,none"] >= 0.0
    assert len(results["samples"]["zeroray_docstring_qa"]) == LIMIT
    assert all(
        isinstance(s["filtered_resps"][0], str) for s in results["samples"]["zeroray_docstring_qa"]
    )


# One recipe task (translation); summarization is scored by the same two code paths.
@pytest.mark.parametrize("task", ["zeroray_translation"])
def test_a_recipe_task_scores_the_same_on_the_export_and_its_endpoint(server, export, task):
    """What `make eval` runs on an export (lm-eval's HF backend through the chat template)
    and with endpoint=... (the chat route): the same prompts, greedy, the same figures."""
    from evaluation.lm_eval_runner import on_endpoint, on_export
    from serve.export import load_export

    # 8 new tokens: the endpoint refuses a prompt that does not fit with the budget (the
    # HF backend would cut it), and the tiny tokenizer spells a docstring in ~220 tokens.
    spec = LmEvalConfig(tasks=[task], limit=4, batch_size=4, max_gen_tokens=8)
    tokenizer = load_export(str(export)).tokenizer  # the chat template serving falls back to
    local = on_export(str(export), spec, "cpu", CONTEXT, tokenizer)
    served = on_endpoint(f"{server}/main/v1", MODEL, CONTEXT, spec, None)
    assert local[task]["documents"] == served[task]["documents"] == 4
    assert local[task] == pytest.approx(served[task])
