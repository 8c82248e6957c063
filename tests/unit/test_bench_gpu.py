"""bench/gpu.py: the GPU training benchmark, checked for correctness only (never for speed)
through its CPU smoke run: trainer worker code in one process, no Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import parse_args, peak_tflops

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # One thread: this machine has 2 cores shared with other work; more threads only thrash.
    env["OMP_NUM_THREADS"] = "1"
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # the first run on a machine JIT-builds DeepSpeed's CPU comm op
        cwd=REPO_ROOT,
        env=env,
    )


def test_cpu_smoke_prints_table_last_and_writes_json(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run_bench("--cpu-smoke", "--out", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[-1].startswith("=====") and set(lines[-1]) == {"="}, lines[-5:]
    title = max(i for i, line in enumerate(lines) if line.startswith("=== zeroray GPU"))
    assert lines[title - 1] == lines[-1]  # the table's top rule; nothing printed after it
    table = dict(line.split(" : ", 1) for line in lines[title + 1 : -1])
    table = {key.strip(): value for key, value in table.items()}
    assert float(table["tokens/s per device"].replace(",", "")) > 0
    assert table["ray imported"] == "False"
    assert table["results"] == str(out)

    result = json.loads(out.read_text())
    assert result["tokens_per_s_per_device"] > 0
    assert 0 < result["mfu"] <= 1
    assert 0 < result["mfu_excluding_embedding"] < result["mfu"]
    assert result["ray_imported"] is False
    assert result["world_size"] == 1 and result["timed_steps"] == 3
    assert result["precision"] == "fp32" and result["attention"] == "sdpa"
    assert result["zero_stage"] == 2
    assert result["optimizer"] == "AdamW" and result["ds_optimizer"]["params"]["torch_adam"]
    assert result["loss_last"] == pytest.approx(result["loss_first"], abs=1.0)  # ~ln(512)


def test_defaults_fit_the_gpu_run_and_the_smoke_run():
    full = parse_args([])
    assert (full.model, full.seq_len, full.vocab, full.zero) == ("llama-1b", 2048, 32000, 2)
    assert (full.micro_batch, full.warmup, full.steps) == (8, 3, 20)
    smoke = parse_args(["--cpu-smoke"])
    assert (smoke.seq_len, smoke.micro_batch, smoke.warmup, smoke.steps) == (64, 2, 1, 3)
    with pytest.raises(SystemExit):
        parse_args(["--steps", "0"])


def test_peak_table_by_device_name():
    assert peak_tflops("NVIDIA H200", None) == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert peak_tflops("NVIDIA L40S", None) == 362.0
    assert peak_tflops("NVIDIA L4", None) == 121.0
    assert peak_tflops("Some Future GPU", None) is None
    assert peak_tflops("Some Future GPU", 500.0) == 500.0


def test_gpu_run_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this would start the real benchmark")
    proc = run_bench("--steps", "1", timeout=120)
    assert proc.returncode != 0
    assert "no CUDA GPU visible" in proc.stderr


@pytest.mark.gpu
def test_gpu_run_trains_in_bf16_and_reports_mfu(tmp_path):
    """The real benchmark, shortened: runs where CUDA is (tests/conftest.py skips it here)."""
    out = tmp_path / "gpu.json"
    proc = run_bench(
        "--steps", "2", "--warmup", "1", "--seq-len", "512", "--out", str(out), timeout=900
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["precision"] == "bf16" and result["timed_steps"] == 2
    assert result["tokens_per_s_per_device"] > 0 and 0 < result["mfu"] <= 1
