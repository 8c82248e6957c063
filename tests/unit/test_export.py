"""Export round trip without Ray: a real single-process DeepSpeed engine (gloo, world size 1)
is exported and reloaded with plain transformers; weights and generation ids must survive."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from schemas.jobs import TrainJobConfig
from schemas.training import DeepSpeedConfig, ModelConfig, TrainerConfig
from trainer.engine import build_engine
from trainer.export import export_hf


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def process_group(monkeypatch_module):
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        monkeypatch_module.setenv(key, value)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_export_round_trip(process_group, tiny_tokenizer, tmp_path, stage):
    cfg = TrainJobConfig(
        model=ModelConfig(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=32),
        deepspeed=DeepSpeedConfig(stage=stage),
        trainer=TrainerConfig(micro_batch_size=2, seq_len=16, max_steps=2),
    )
    engine, _ = build_engine(cfg, tiny_tokenizer, world_size=1, on_gpu=False)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 16))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()  # one real update, so the export differs from a fresh init
    engine.eval()
    with torch.no_grad():
        expected = engine(input_ids=ids).logits

    export_hf(engine, tiny_tokenizer, str(tmp_path / "export"), stage, rank=0)

    files = {p.name for p in (tmp_path / "export").iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= files
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected)
    # A from-scratch config must carry the tokenizer's ids, or generation never stops.
    eos = tokenizer.eos_token_id
    assert model.config.eos_token_id == eos == model.generation_config.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    out = model.generate(**tokenizer("The", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 1
