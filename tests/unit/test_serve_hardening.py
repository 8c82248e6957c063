"""Smaller hardening of the serving surface: token ids bounded by the model's embedding rows
(not the tokenizer's length), 500 bodies that never carry an exception's text, and `make
eval endpoint=...` that never sends the key in plain text to another machine."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import GPT2Config, GPT2LMHeadModel

from cluster.schema import load_config
from schemas.fields import ConfigError
from serve.generator import Generator

EMBEDDING_ROWS = 300  # fewer than the tiny tokenizer's 400 tokens


@pytest.fixture(scope="module")
def short_gen(tmp_path_factory, tiny_tokenizer) -> Generator:
    """An export whose tokenizer is larger than its embedding, as a third-party one may be."""
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=64, vocab_size=EMBEDDING_ROWS)
    path = tmp_path_factory.mktemp("short") / "tiny-gpt2"
    GPT2LMHeadModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return Generator(str(path), device="cpu")


def test_token_ids_are_bounded_by_the_embedding_not_the_tokenizer(short_gen, make_openai_app):
    tokenizer = short_gen.tokenizer
    assert len(tokenizer) > EMBEDDING_ROWS
    past_rows = next(  # a text whose tokens the tokenizer has and the model does not
        w for w in ("ing", "the", "return", "value") if max(short_gen.encode(w)) >= 300
    )
    with TestClient(make_openai_app(short_gen)) as http:
        for prompt in ([5, EMBEDDING_ROWS], past_rows):
            body = {"model": "tiny-gpt2", "prompt": prompt, "max_tokens": 2}
            r = http.post("/v1/completions", json=body)
            assert r.status_code == 400, r.text  # not a 500 from an index out of range
            assert r.json()["error"]["param"] == "prompt"
            assert f"[0, {EMBEDDING_ROWS})" in r.json()["error"]["message"]
        ok = http.post("/v1/completions", json={"model": "tiny-gpt2", "prompt": [5, 299]})
        assert ok.status_code == 200, ok.text


SECRET_TEXT = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 61.2 GiB allocated)"


def test_a_500_body_never_carries_the_exceptions_text(gen, make_openai_app, monkeypatch):
    app = make_openai_app(gen)

    def fail(row, token):
        raise RuntimeError(SECRET_TEXT)

    body = {"model": "tiny-gpt2", "prompt": "The", "max_tokens": 3}
    with TestClient(app) as http:
        monkeypatch.setattr(gen, "_advance_row", fail)
        plain = http.post("/v1/completions", json=body)
        streamed = http.post("/v1/completions", json={**body, "stream": True})
        monkeypatch.undo()
        assert http.post("/v1/completions", json=body).status_code == 200  # it serves on
    assert plain.status_code == 500
    error = plain.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "GiB" not in plain.text and "RuntimeError" not in plain.text
    assert error["message"].startswith("generation failed (ref ")
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if "{" in line]
    assert "error" in events[-1] and "GiB" not in streamed.text


@pytest.mark.parametrize(
    "endpoint, allow, refused",
    [
        ("http://10.0.0.7:8000/v1", False, True),
        ("http://10.0.0.7:8000/v1", True, False),  # allow_plain_http_key=true: trusted network
        ("https://10.0.0.7:8000/v1", False, False),
        ("http://127.0.0.1:8000/v1", False, False),  # an ssh -L tunnel
    ],
)
def test_eval_never_sends_the_key_in_plain_text_to_another_machine(endpoint, allow, refused):
    from cluster.eval import refuse_a_key_in_plain_text

    cfg = load_config("eval", [f"endpoint={endpoint}", f"allow_plain_http_key={allow}"])
    refuse_a_key_in_plain_text(cfg, None)  # no key: nothing to leak
    if refused:
        with pytest.raises(ConfigError, match=r"over plain http; allowed: an https"):
            refuse_a_key_in_plain_text(cfg, "sekrit")
    else:
        refuse_a_key_in_plain_text(cfg, "sekrit")


def test_the_key_reaches_lm_eval_built_into_its_model_not_in_its_model_args(monkeypatch):
    import lm_eval
    import lm_eval.api.registry

    from evaluation import lm_eval_runner
    from schemas.evaluation import LmEvalConfig

    built, seen = [], []

    class FakeLM:
        @classmethod
        def create_from_arg_obj(cls, args, extra):
            built.append(args)
            return cls()

    monkeypatch.setattr(lm_eval.api.registry, "get_model", lambda name: FakeLM)
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: seen.append(kw) or {})
    lm_eval_runner._evaluate(
        "local-completions", {"model": "m"}, [], LmEvalConfig(), {"auth_token": "sekrit"}
    )
    assert built == [{"model": "m", "auth_token": "sekrit"}]
    assert isinstance(seen[0]["model"], FakeLM) and "sekrit" not in repr(seen[0]["model_args"])
