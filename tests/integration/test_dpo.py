"""Real preference-tuning runs: `cluster.dpo.main` on the local Ray cluster (2 CPU workers,
DeepSpeed ZeRO-2 over gloo). On the embedded pairs: a full run (reference scored once by the
starting model) ending in an export plain transformers loads, and a stopped-and-resumed full
run that ends bitwise equal to it. On pairs from files (JSONL train, Parquet test, implicit
prompts): a LoRA run (reference = adapter disabled) whose held-out pairs, from packages it
never saw, end with reward accuracy above 0.5, and whose merged export changed only the
adapted weights. Under ZeRO-3: the reference scored by the sharded model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from cluster.dpo import main as dpo_main
from dataprep.readers.stdlib_qa import stdlib_preference_pairs
from rundir.metrics_file import read_metrics

STEPS = 20
NO_EVAL = ("evaluate_at_end=false",)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_export, pydoc_docs):
    root = tmp_path_factory.mktemp("dpo")
    corpus = root / "text"
    corpus.mkdir()
    for i in range(4):  # held-out text for the final evaluation's perplexity
        (corpus / f"part-{i}.txt").write_text("\n\n".join(d.text for d in pydoc_docs[i::4]))
    common = [
        f"model.name_or_path={tiny_export}",
        "data=text-files",
        f"data.paths=[{corpus}/*.txt]",
        "pref.max_examples=64",  # 8 steps an epoch: the last windows are on pairs seen before
        "epochs=null",
        f"trainer.max_steps={STEPS}",
        "trainer.seq_len=64",
        "trainer.micro_batch_size=4",
        "trainer.log_every_steps=1",
        "trainer.eval_every_steps=10",
        "trainer.eval_batches=8",
        "trainer.checkpoint_every_steps=10",
        "trainer.keep_checkpoints=4",
        "optim.lr=2e-3",
        "dpo.beta=0.5",
        "eval.max_examples=8",
        "eval.max_new_tokens=4",
        "eval.text_batches=1",
        "eval.lm_eval.tasks=[]",  # lm-eval's own test is test_lm_eval.py
        "eval.seq_len=32",
        "eval.num_samples=0",
        "experiment=dpo",
        f"output_dir={root / 'runs'}",
        f"cache_dir={root / 'cache'}",
    ]
    return {"root": root, "common": common, "base": Path(tiny_export)}


def _dpo(setup, run_name: str, *extra: str) -> Path:
    assert dpo_main([*setup["common"], f"run_name={run_name}", *extra]) == 0
    return setup["root"] / "runs" / "dpo" / run_name


@pytest.fixture(scope="module")
def full_run(ray_cluster, setup):
    return _dpo(setup, "full", "deepspeed=zero2")


@pytest.fixture(scope="module")
def lora_run(ray_cluster, setup):
    """The LoRA run, on pairs from files: the embedded prompts and answers, with rejected
    answers of scrambled word order, a preference for well-formed answers that DPO must learn
    from the training packages and show on packages it never saw. Implicit prompts (whole
    conversations), JSONL to train, Parquet to test."""
    rng = random.Random(0)
    pairs = list(stdlib_preference_pairs())
    train_groups = sorted({p["group"] for p in pairs})[::2]

    def record(p):
        user = {"role": "user", "content": p["prompt"]}
        return {
            "chosen": [user, {"role": "assistant", "content": p["chosen"]}],
            "rejected": [user, {"role": "assistant", "content": _shuffled(p["chosen"], rng)}],
        }

    train = [record(p) for p in pairs if p["group"] in train_groups][:256]
    test = [record(p) for p in pairs if p["group"] not in train_groups][:64]
    root = setup["root"]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    pq.write_table(pa.Table.from_pylist(test), root / "held-out.parquet")
    # DPO's side-by-side evaluation is checked once, on the full run.
    return _dpo(
        setup,
        "files",
        "pref=files",
        f"pref.paths=[{root / 'pairs.jsonl'}]",
        f"pref.test_paths=[{root / 'held-out.parquet'}]",
        "pref.max_examples=null",
        "lora.enabled=true",
        "lora.rank=4",
        *NO_EVAL,
    )


def _rows(run: Path) -> list[dict]:
    return read_metrics(run / "metrics.jsonl")


def _loads(export: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(export)
    assert model(torch.tensor([[1, 2, 3]])).logits.isfinite().all()


def test_full_dpo_starts_at_log_2_learns_its_pairs_and_exports(full_run, setup):
    rows = _rows(full_run)
    assert rows[0]["step"] == 0
    # Reference = policy before the first step: every pair's loss is log 2, margin 0.
    assert rows[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[0]["val_reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert rows[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # step 1's forward: same
    evals = [r for r in rows if "val_reward_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 10, 20]
    for key in ("rewards_chosen", "rewards_rejected", "reward_margin"):
        assert key in rows[-1] and f"val_{key}" in evals[-1]
    _loads(full_run / "export")
    base = load_file(setup["base"] / "model.safetensors")
    tuned = load_file(full_run / "export" / "model.safetensors")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    # The reference table was kept beside the prepared pairs, and the run ended with the
    # starting model and the result evaluated side by side.
    assert list((setup["root"] / "cache").glob("pref-*/reference-logps-*.pt"))
    report = json.loads((full_run / "eval.json").read_text())
    assert set(report) == {"before DPO", "after DPO"}
    assert (full_run / "loss.png").stat().st_size > 0


def test_lora_dpo_uses_the_disabled_adapter_as_reference_and_exports(lora_run, setup):
    assert not (lora_run / "eval.json").exists()  # evaluate_at_end=false: the summary only
    rows = _rows(lora_run)
    assert rows[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert rows[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert rows[-1]["val_reward_margin"] != 0  # the adapter moved the policy off its reference
    merged = load_file(lora_run / "export" / "model.safetensors")
    base = load_file(setup["base"] / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(".attn.c_attn." in k for k in changed)  # the adapted weights only
    _loads(lora_run / "export")


def test_a_dpo_run_resumed_from_its_step_10_checkpoint_ends_bitwise_equal(full_run, setup):
    # The full run's own step-10 checkpoint is where a run stopped there would resume from
    # (stop_at_step and resume=latest are tested on pretraining, test_resume.py): the
    # reference table, the policy, Adam and the data position must all come back.
    checkpoint = full_run / "step_0000010"
    resumed = _dpo(setup, "resumed", "deepspeed=zero2", f"resume={checkpoint}", *NO_EVAL)
    a = {r["step"]: r for r in _rows(full_run)}
    b = {r["step"]: r for r in _rows(resumed)}
    assert sorted(a) == sorted(b)
    for step in a:
        for key in ("loss", "reward_margin", "val_loss", "val_reward_accuracy"):
            assert a[step].get(key) == b[step].get(key), (step, key)
    wa = load_file(full_run / "export" / "model.safetensors")
    wb = load_file(resumed / "export" / "model.safetensors")
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def _shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def test_a_preference_learned_from_files_carries_to_held_out_packages(lora_run):
    evals = [r for r in _rows(lora_run) if "val_reward_accuracy" in r]
    assert evals[0]["val_reward_accuracy"] == 0.0  # margin 0 at the start: none ordered right
    assert evals[-1]["val_reward_accuracy"] > 0.5
    assert evals[-1]["val_reward_margin"] > 0


def test_under_zero3_the_reference_is_scored_by_the_sharded_model(ray_cluster, setup):
    run = _dpo(
        setup,
        "zero3",
        "deepspeed=zero3",
        "trainer.max_steps=4",
        "trainer.eval_every_steps=4",
        *NO_EVAL,
    )
    rows = _rows(run)
    # Scored by the ZeRO-3 engine itself (its own table: the key holds the stage), it agrees
    # with the policy's first forward pass.
    assert rows[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert rows[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    tables = list((setup["root"] / "cache").glob("pref-*/reference-logps-*.pt"))
    assert tables and all(
        torch.load(t, weights_only=True)["train"].shape == (64, 2) for t in tables
    )
    _loads(run / "export")
