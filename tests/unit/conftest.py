"""Unit tier guard: no test here may start Ray (the integration tier owns that). And the
serving tests' tiny export, its Generator, greedy reference outputs, and the replica's
whole HTTP API built over them without Ray."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from schemas.serving import ServeConfig
from serve.api.router import build_openai_app
from serve.generator import Generator
from serve.scheduler import Scheduler


@pytest.fixture(autouse=True)
def _no_ray_started():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and hasattr(ray, "is_initialized"):
        assert not ray.is_initialized(), "a unit test started Ray; move it to tests/integration"


# --- the serving tests' tiny export ---------------------------------------------

TEXTS = [
    "Return",  # prompts of different lengths, so the batch is really left-padded
    "The list of arguments is",
    "Raise a ValueError if the value is not a string, and return the",
]


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, tiny_tokenizer) -> str:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        vocab_size=len(tiny_tokenizer),
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        initializer_range=0.3,  # spread-out logits: no near-ties for greedy to trip on
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        # A zero EOS embedding gives EOS logit 0, never the argmax here, so greedy rows run
        # to max_tokens; the EOS test chooses its own end token instead.
        model.transformer.wte.weight[tiny_tokenizer.eos_token_id] = 0.0
    path = tmp_path_factory.mktemp("serve") / "tiny-gpt2"
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def gen(export_dir) -> Generator:
    return Generator(export_dir, device="cpu")


@pytest.fixture(scope="session")
def prompts(gen) -> list[list[int]]:
    ids = [gen.encode(t) for t in TEXTS]
    assert len({len(p) for p in ids}) == len(ids)
    return ids


@pytest.fixture(scope="session")
def make_openai_app(gen, export_dir):
    """``make(generator=None, metrics=None, **ServeConfig settings)``: a replica's FastAPI
    app (the router, the serving classes, admission and a real Scheduler) over ``gen`` or
    ``generator``, wired as the Serve deployment wires it, with no Ray. Each call has its own
    Scheduler, so an app is driven from one event loop (one TestClient, or one asyncio.run)."""

    def make(generator: Generator | None = None, metrics=None, **settings):
        generator = generator or gen
        config = ServeConfig(model_dir=export_dir, **settings)
        scheduler = Scheduler.from_config(generator, config)
        return build_openai_app(config, generator, scheduler, metrics)

    return make
