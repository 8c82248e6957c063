"""Multi-LoRA serving without Ray: two adapters trained on different texts beside the tiny
export, routed by model id, mixed row by row in one continuous batch, loaded and unloaded at
run time; each stream equals that adapter alone through plain peft + transformers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch
from lora_adapters import ADAPTER_TEXTS, train_adapter
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from schemas.serving import LoraServeConfig, ServeConfig
from serve.adapters import Adapters
from serve.api.router import build_openai_app
from serve.generator import Generator
from serve.sampling import SamplingParams
from serve.scheduler import Scheduler

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def adapter_dirs(export_dir, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: train_adapter(export_dir, texts, root / name, seed=i)
        for i, (name, texts) in enumerate(ADAPTER_TEXTS.items())
    }


@pytest.fixture(scope="module")
def references(export_dir, adapter_dirs, prompts) -> dict:
    """(model id, prompt index) -> greedy ids of transformers' generate on that prompt
    alone: the base export, or the base with that one adapter through plain peft."""
    from peft import PeftModel

    out = {}
    for model_id in [None, *adapter_dirs]:
        model = AutoModelForCausalLM.from_pretrained(export_dir)
        if model_id is not None:
            model = PeftModel.from_pretrained(model, adapter_dirs[model_id])
        model.eval()
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([prompt])
            new = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                pad_token_id=0,
            )[0, len(prompt) :].tolist()
            out[model_id, i] = new
    return out


def test_the_adapters_learned_different_updates(adapter_dirs, references, prompts):
    from safetensors.torch import load_file

    b = [
        {k: v for k, v in load_file(f"{d}/adapter_model.safetensors").items() if "lora_B" in k}
        for d in adapter_dirs.values()
    ]
    assert all(t.abs().sum() > 0 for t in b[0].values())
    assert any(not torch.equal(b[0][k], b[1][k]) for k in b[0])
    # And they change what greedy decoding picks, so the comparisons below can fail.
    for i in range(len(prompts)):
        assert len({tuple(references[m, i]) for m in (None, "alpha", "beta")}) > 1


def _app(export_dir, lora: LoraServeConfig, **settings):
    gen = Generator(export_dir, device="cpu")  # its own: peft wraps the model in place
    config = ServeConfig(model_dir=export_dir, lora=lora, **settings)
    scheduler = Scheduler.from_config(gen, config)
    return gen, build_openai_app(config, gen, scheduler)


def _spy_adapter_sets(gen) -> list[set]:
    """The distinct adapters of every forward pass (a set per call)."""
    seen, forward = [], gen.forward

    def spy(*args, **kwargs):
        adapters = kwargs.get("adapters", args[4] if len(args) > 4 else None)
        seen.append(set(adapters or [None]))
        return forward(*args, **kwargs)

    gen.forward = spy
    return seen


async def _completions(app, requests: list[tuple[str, list[int]]]) -> list:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await asyncio.gather(
            *(
                http.post(
                    "/v1/completions",
                    json={
                        "model": model,
                        "prompt": prompt,
                        "max_tokens": NEW_TOKENS,
                        "temperature": 0,
                    },
                )
                for model, prompt in requests
            )
        )


def _text(gen, ids: list[int]) -> str:
    return gen.tokenizer.decode(ids, skip_special_tokens=True)


def test_twelve_mixed_streams_equal_each_adapter_alone(
    export_dir, adapter_dirs, references, prompts
):
    gen, app = _app(export_dir, LoraServeConfig(adapters=adapter_dirs), batch_wait_timeout_s=0.05)
    seen = _spy_adapter_sets(gen)
    models = ["tiny-gpt2", "alpha", "tiny-gpt2:beta"]  # base, a name, and "<base>:<adapter>"
    requests = [(models[k % 3], prompts[k % len(prompts)]) for k in range(12)]
    responses = asyncio.run(_completions(app, requests))
    for (model, prompt), response in zip(requests, responses):
        adapter = {"tiny-gpt2": None, "alpha": "alpha", "tiny-gpt2:beta": "beta"}[model]
        expected = _text(gen, references[adapter, prompts.index(prompt)])
        assert response.json()["choices"][0]["text"] == expected, model
        assert response.json()["model"] == model
    assert max(len(s) for s in seen) == 3  # base, alpha and beta decoded in one batch


def test_max_loras_keeps_a_third_adapter_waiting(export_dir, adapter_dirs, references, prompts):
    gen, app = _app(
        export_dir,
        LoraServeConfig(adapters=adapter_dirs, max_loras=1),
        batch_wait_timeout_s=0.05,
    )
    seen = _spy_adapter_sets(gen)
    requests = [(m, prompts[0]) for m in ("alpha", "beta", "tiny-gpt2", "beta", "alpha")]
    responses = asyncio.run(_completions(app, requests))
    for (model, _), response in zip(requests, responses):
        want = _text(gen, references[None if model == "tiny-gpt2" else model, 0])
        assert response.json()["choices"][0]["text"] == want
    assert all(len(s - {None}) <= 1 for s in seen)
    assert any(len(s) == 2 for s in seen)  # the base still rides along with an adapter


def test_models_lists_adapters_with_parent_and_unknown_is_404(export_dir, adapter_dirs):
    _, app = _app(export_dir, LoraServeConfig(adapters=adapter_dirs))

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            models = await http.get("/v1/models")
            unknown = await http.post(
                "/v1/completions", json={"model": "gamma", "prompt": "x", "max_tokens": 1}
            )
            return models, unknown

    models, unknown = asyncio.run(run())
    cards = {c["id"]: c for c in models.json()["data"]}
    assert set(cards) == {"tiny-gpt2", "alpha", "beta"}
    assert cards["alpha"]["parent"] == cards["beta"]["parent"] == "tiny-gpt2"
    assert cards["tiny-gpt2"]["parent"] is None
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


def test_load_unload_reload_keeps_the_others_unchanged(
    export_dir, adapter_dirs, references, prompts, tmp_path
):
    root = str(adapter_dirs["beta"]).rsplit("/", 1)[0]
    gen, app = _app(
        export_dir,
        LoraServeConfig(adapters={"alpha": adapter_dirs["alpha"]}, allowed_roots=[root]),
    )
    other_base = tmp_path / "other-base"  # the same vocabulary, another width
    small = GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=64, vocab_size=gen.vocab_rows)
    GPT2LMHeadModel(small).save_pretrained(other_base)
    gen.tokenizer.save_pretrained(other_base)
    mismatched = train_adapter(other_base, ["x y z"], f"{root}/mismatched", steps=1)

    def texts(rs):
        return [r.json()["choices"][0]["text"] for r in rs]

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

            async def both():
                rs = await asyncio.gather(
                    *(
                        http.post(
                            "/v1/completions",
                            json={
                                "model": m,
                                "prompt": prompts[1],
                                "max_tokens": NEW_TOKENS,
                                "temperature": 0,
                            },
                        )
                        for m in ("tiny-gpt2", "alpha")
                    )
                )
                return texts(rs)

            def post(route, body):
                return http.post(f"/v1/{route}", json=body)

            log = {"before": await both()}
            log["load"] = await post(
                "load_lora_adapter", {"lora_name": "beta", "lora_path": adapter_dirs["beta"]}
            )
            beta = await http.post(
                "/v1/completions",
                json={
                    "model": "beta",
                    "prompt": prompts[1],
                    "max_tokens": NEW_TOKENS,
                    "temperature": 0,
                },
            )
            log["beta"] = texts([beta])[0]
            log["loaded"] = await both()
            log["unload"] = await post("unload_lora_adapter", {"lora_name": "beta"})
            log["gone"] = await http.post("/v1/completions", json={"model": "beta", "prompt": "x"})
            log["unloaded"] = await both()
            await post(
                "load_lora_adapter", {"lora_name": "beta", "lora_path": adapter_dirs["beta"]}
            )
            again = await http.post(
                "/v1/completions",
                json={
                    "model": "beta",
                    "prompt": prompts[1],
                    "max_tokens": NEW_TOKENS,
                    "temperature": 0,
                },
            )
            log["beta_again"] = texts([again])[0]
            log["outside"] = await post(
                "load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path)}
            )
            log["mismatch"] = await post(
                "load_lora_adapter", {"lora_name": "m", "lora_path": mismatched}
            )
            log["unknown_unload"] = await post("unload_lora_adapter", {"lora_name": "nope"})
            return log

    log = asyncio.run(run())
    want = [_text(gen, references[m, 1]) for m in (None, "alpha")]
    assert log["before"] == log["loaded"] == log["unloaded"] == want
    assert log["load"].status_code == log["unload"].status_code == 200
    assert log["beta"] == log["beta_again"] == _text(gen, references["beta", 1])
    assert log["gone"].status_code == 404
    outside = log["outside"]
    assert (
        outside.status_code == 400
        and "serve.lora.allowed_roots" in outside.json()["error"]["message"]
    )
    mismatch = log["mismatch"].json()["error"]["message"]
    assert log["mismatch"].status_code == 400 and "n_embd" in mismatch and "\n" not in mismatch
    assert log["unknown_unload"].status_code == 404


def test_the_scanned_folder_loads_on_demand_and_evicts_the_least_recent(
    export_dir, adapter_dirs, references, prompts
):
    folder = str(adapter_dirs["alpha"]).rsplit("/", 1)[0]
    gen = Generator(export_dir, device="cpu")
    adapters = Adapters(gen, LoraServeConfig(adapter_dir=folder, max_loaded=1), "tiny-gpt2")
    scheduler = Scheduler(gen, max_batch_size=4)
    adapters.in_use = scheduler.adapters_in_use

    async def run(name):
        adapters.ensure(adapters.adapter_of(name))
        text = ""
        async for d in scheduler.generate(prompts[2], SamplingParams(NEW_TOKENS, 0.0), name):
            text += d.text
        return text, adapters.ids()

    assert asyncio.run(run("alpha")) == (_text(gen, references["alpha", 2]), ["alpha"])
    assert asyncio.run(run("beta")) == (_text(gen, references["beta", 2]), ["beta"])
    assert not adapters.knows("gamma")


def test_an_adapter_directory_loads_as_an_export_on_its_base(adapter_dirs, references, prompts):
    """What `make eval export=<adapter dir>` measures: the adapter merged onto its base."""
    from serve.export import load_export

    export = load_export(adapter_dirs["beta"], device="cpu")
    ids = torch.tensor([prompts[0]])
    new = export.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        pad_token_id=0,
    )[0, len(prompts[0]) :].tolist()
    assert new == references["beta", 0]
    assert export.name == "beta"


def test_a_run_time_load_reaches_the_other_replica_through_sync(export_dir, adapter_dirs):
    """Two replicas' adapter sets and a dict standing in for the app's registry actor."""
    root = str(adapter_dirs["beta"]).rsplit("/", 1)[0]
    registry: dict[str, str] = {}

    def publish(name, path):  # AdapterRegistry.publish
        if path is None:
            registry.pop(name, None)
        else:
            registry[name] = path

    one, two = (
        Adapters(Generator(export_dir, device="cpu"), LoraServeConfig(allowed_roots=[root]), "m")
        for _ in range(2)
    )
    one.publish = two.publish = publish
    one.load_at_run_time("beta", adapter_dirs["beta"])
    assert not two.knows("beta")
    two.sync(registry)  # its next health check
    assert two.adapter_of("beta") == "beta"
    two.ensure("beta")  # its first request for it
    assert two.ids() == ["beta"]
    one.unload_at_run_time("beta")
    two.sync(registry)
    assert two.ids() == [] and not two.knows("beta")
