"""`make plan`: exact parameter counts from the meta device, model-state bytes that agree
with DeepSpeed's own estimators and with what real engines hold, and the fit check that
refuses a run before Ray starts."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import run_command as run_entry  # the entry points as a user runs them

from cluster.ray_setup import check_resources
from cluster.runs.resolve import absolute_paths
from cluster.schema import load_config
from cluster.training.run import preflight
from planner.alternatives import make_plan
from planner.estimate import Candidate, model_state_bytes
from planner.model_size import ModelSize, measure_model
from schemas.fields import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def candidate(stage: int, offload_optimizer=False, offload_param=False) -> Candidate:
    return Candidate(stage, offload_optimizer, offload_param, False, 8, 1)


@pytest.mark.parametrize(("nodes", "per_node"), [(1, 1), (1, 8), (4, 8)])
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_model_states_equal_deepspeeds_estimator(nodes, per_node, offload):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    size = ModelSize(1_100_048_384, 1_100_048_384, 65_536_000, 0, 22, 2048, 32, 32000)
    cpu, gpu = estimate_zero2_model_states_mem_needs(size.total, per_node, nodes, offload)
    states, host = model_state_bytes(size, candidate(2, offload), nodes * per_node, per_node, True)
    assert sum(states.values()) == pytest.approx(gpu, abs=1)
    assert host == pytest.approx(cpu, abs=1)


@pytest.mark.parametrize(("nodes", "per_node"), [(1, 1), (1, 8), (4, 8)])
@pytest.mark.parametrize(
    ("offload_opt", "offload_param"), [(False, False), (True, False), (True, True)]
)
def test_zero3_model_states_equal_deepspeeds_estimator(nodes, per_node, offload_opt, offload_param):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    size = ModelSize(1_100_048_384, 1_100_048_384, 65_536_000, 0, 22, 2048, 32, 32000)
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        size.total, size.largest_layer, per_node, nodes, offload_opt, offload_param
    )
    c = candidate(3, offload_opt, offload_param)
    states, host = model_state_bytes(size, c, nodes * per_node, per_node, True)
    assert sum(states.values()) == pytest.approx(gpu, abs=1)
    assert host == pytest.approx(cpu, abs=1)


def test_meta_counts_equal_the_real_model_and_peft(tiny_tokenizer, tmp_path):
    from trainer.lora import apply_lora, trainable_fraction
    from trainer.model import build_model

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    overrides = ["tokenizer=pretrained", f"tokenizer.name_or_path={tmp_path / 'tok'}"]
    for extra in (
        [],
        [
            "model=llama-1b",
            "model.num_layers=2",
            "model.hidden_size=256",
            "model.num_heads=4",
            "model.num_kv_heads=2",
            "model.intermediate_size=512",
        ],
    ):
        cfg = load_config("train", overrides + extra)
        real = build_model(cfg.model, tiny_tokenizer, {}, __import__("torch").float32)
        size = measure_model(cfg)
        assert size.total == sum(p.numel() for p in real.parameters())
        lora = load_config("train", overrides + extra + ["lora.enabled=true"])
        trainable, total = trainable_fraction(apply_lora(real, lora.lora))
        assert (measure_model(lora).trainable, measure_model(lora).total) == (trainable, total)
    # GPT-2 small at GPT-2's vocabulary: the published 124M.
    gpt2 = measure_model(load_config("train", ["model=gpt2-124m", "tokenizer.vocab_size=50257"]))
    assert gpt2.total == 124_439_808


def test_real_engines_on_two_ranks_hold_what_the_plan_says(tmp_path, tiny_tokenizer):
    """Each ZeRO stage on 2 processes (gloo, fp32): weights, gradients and optimizer
    partitions summed from every rank's engine tensors, against the plan, within 5%."""
    tokenizer_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tokenizer_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # a free port of its own
            str(REPO_ROOT / "tests/helpers/engine_state_bytes.py"),
            str(tokenizer_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ENGINE_BYTES ")), None)
    assert line, (proc.stdout + proc.stderr)[-3000:]
    ranks = json.loads(line.removeprefix("ENGINE_BYTES "))
    cfg = load_config(
        "train",
        [
            "tokenizer=pretrained",
            f"tokenizer.name_or_path={tokenizer_dir}",
            "trainer.micro_batch_size=2",
            "trainer.seq_len=32",
            "trainer.precision=fp32",
        ],
    )
    size = measure_model(cfg)
    for stage in range(4):
        planned, _ = model_state_bytes(size, candidate(stage), 2, 2, bits16=False)
        if stage == 3:  # the gathered layer lives only while its forward/backward runs
            planned["parameters"] -= 4 * size.largest_layer
        for rank in ranks:
            for kind, held in rank[str(stage)].items():
                assert held == pytest.approx(planned[kind], rel=0.05), (stage, kind)


TOO_BIG = [
    "model=llama-1b",
    "scaling=gpu-node",
    "tokenizer.vocab_size=32000",
    "trainer.seq_len=2048",
    "trainer.micro_batch_size=32",
    "deepspeed=zero0",
]


def test_train_refuses_a_run_that_does_not_fit_before_ray_starts(tmp_path):
    dirs = [f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]
    proc = run_entry("cluster.train", *TOO_BIG, *dirs)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: plan: ZeRO-0, micro 32 x accum 1 needs ")
    assert "GiB are usable" in line and "plan.check=false" in line
    assert not (tmp_path / "runs").exists()  # nothing reserved, nothing started
    # With the check off, every check before Ray passes, and the next refusal is the
    # cluster's: this machine is not 8 GPU workers' size. Its resources are given here as
    # Ray reports them, so that this tier starts no Ray (a subprocess that did took 11 s).
    cfg = absolute_paths(load_config("train", [*TOO_BIG, *dirs, "plan.check=false"]))
    preflight(cfg)
    with pytest.raises(ConfigError, match="allowed: at most the cluster's"):
        check_resources(cfg.scaling, {"CPU": 2.0, "memory": 24 * 1024**3})


def test_plan_prints_alternatives_and_a_recommendation_that_fits(tmp_path, capsys):
    # `make plan` in this process: its exit code and refusals are the CLI's (test_cli.py).
    from cluster.plan import main as plan_main

    assert plan_main([*TOO_BIG, "--json", "plan.device_hour_price=2.0"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["configured"]["fits"] is False
    best = plan["recommended"]
    assert best["fits"] and best["device_bytes"] <= best["usable_bytes"]
    speeds = [a["tokens_per_s"] for a in plan["alternatives"]]
    assert speeds == sorted(speeds, reverse=True)
    assert all(a["tokens_per_s"] <= best["tokens_per_s"] for a in plan["alternatives"] if a["fits"])
    assert plan["compute_optimal_tokens"] == 20 * plan["model"]["total"]
    assert best["cost"] == pytest.approx(best["device_hours"] * 2.0)
    picture = tmp_path / "plan.png"
    assert plan_main([*TOO_BIG, "--picture", str(picture)]) == 0
    assert picture.stat().st_size > 1000
    out = capsys.readouterr().out
    assert "recommended   :" in out and "* ZeRO-0, micro 32 x accum 1" in out


def test_make_plan_of_the_default_fits_this_machine():
    plan = make_plan(load_config("train", []))
    assert plan.configured.fits and plan.recommended is not None
    assert plan.size.total == 953_856  # gpt2-tiny at the default 4096-token vocabulary


def test_a_finetuning_plan_weighs_lora_against_full_finetuning(tiny_export, tmp_path):
    from cluster.training.recipes import SFT
    from cluster.training.run import load_job_config

    overrides = [f"model.name_or_path={tiny_export}", f"output_dir={tmp_path}"]
    cfg = load_job_config(SFT, overrides)
    plan = make_plan(cfg)
    mine = plan.configured.candidate  # ZeRO-2, full fine-tuning
    by_lora = {
        e.candidate.lora: e
        for e in plan.alternatives
        if e.candidate == dataclasses.replace(mine, lora=e.candidate.lora)
    }
    assert set(by_lora) == {False, True}
    full, lora = by_lora[False], by_lora[True]
    # The adapter alone has gradients and optimizer state; the frozen base keeps its weights.
    assert lora.memory["optimizer"] < full.memory["optimizer"] / 5  # r=16 on a width-32 model
    assert lora.memory["parameters"] >= full.memory["parameters"]
    assert not any(e.candidate.lora and e.candidate.stage == 3 for e in plan.alternatives)
    assert "lora.enabled=true" in lora.candidate.overrides(against=full.candidate)
