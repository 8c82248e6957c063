"""`python -m cluster.train` and the other entry points: bad input fails before Ray starts,
with one line and exit code 2. The entry points run in-process (``run_cli`` exactly as
``__main__`` calls it); one case runs the real command in a subprocess. The unit tier's
conftest fails any test that leaves Ray started."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_command(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m module args`` in a process of its own, as a shell runs it (no RAY_ADDRESS):
    for checks that need the real exit or that reach Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )


@pytest.fixture
def run_entry(monkeypatch, capsys, tmp_path):
    """``run(module, *args)``: the entry point's exit code and output, in this process."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(module: str, *args: str) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", [module, *args])
        with pytest.raises(SystemExit) as exit_:
            run_cli(importlib.import_module(module).main)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, exit_.value.code, out.out, out.err)

    return run


@pytest.fixture
def run_train(run_entry):
    return lambda *args: run_entry("cluster.train", *args)


def assert_refused(proc: subprocess.CompletedProcess, field: str) -> str:
    combined = proc.stdout + proc.stderr
    assert proc.returncode == 2, combined[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {proc.stderr!r}"
    line = lines[0]
    assert line.startswith("error:") and len(line) > len("error: ")
    assert field in line
    assert "Ray" not in combined, "Ray was started (or mentioned) before the input was refused"
    return line


@pytest.fixture
def dirs(tmp_path) -> list[str]:
    # Keep every run's side effects (output and cache directories) inside tmp_path.
    return [f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]


def test_the_real_command_exits_2_before_ray_starts(dirs):
    """The one subprocess case: exit code, stderr and Ray untouched as a shell sees them."""
    line = assert_refused(run_command("cluster.train", "model=nope", *dirs), "model")
    assert "gpt2-tiny" in line  # the allowed options are listed


def test_unknown_model_option(dirs, run_train):
    line = assert_refused(run_train("model=nope", *dirs), "model")
    assert "gpt2-tiny" in line


def test_non_positive_max_steps(dirs, run_train):
    assert_refused(run_train("trainer.max_steps=0", *dirs), "trainer.max_steps")


def test_text_files_glob_that_matches_nothing(dirs, tmp_path, run_train):
    glob = tmp_path / "nowhere" / "*.txt"
    assert_refused(run_train("data=text-files", f"data.paths=[{glob}]", *dirs), "data.paths")


def test_output_dir_that_cannot_be_created(tmp_path, run_train):
    assert_refused(
        run_train("output_dir=/proc/zeroray", f"cache_dir={tmp_path / 'cache'}"), "output_dir"
    )
    assert not Path("/proc/zeroray").exists()


def test_existing_run_name_is_never_reused(tmp_path, run_train):
    run_dir = tmp_path / "x" / "y"
    run_dir.mkdir(parents=True)
    keep = run_dir / "metrics.jsonl"
    keep.write_text('{"step": 1, "loss": 6.2}\n')
    before = (keep.read_bytes(), keep.stat().st_mtime_ns)

    proc = run_train(
        f"output_dir={tmp_path}", "experiment=x", "run_name=y", f"cache_dir={tmp_path / 'cache'}"
    )
    assert_refused(proc, "run_name")
    assert (keep.read_bytes(), keep.stat().st_mtime_ns) == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl"]


def test_cfg_prints_the_composed_config(run_train):
    proc = run_train("--cfg", "trainer.max_steps=7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max_steps: 7" in proc.stdout
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["trainer"]["max_steps"] == 7
    assert cfg["model"]["hidden_size"] == 128
    assert cfg["deepspeed"]["stage"] == 2


def test_finetune_without_a_pretraining_export_says_to_train_first(dirs, run_entry):
    line = assert_refused(run_entry("cluster.finetune", *dirs), "model.name_or_path")
    assert "make train" in line


def test_finetune_refuses_lora_under_zero3(dirs, tiny_export, run_entry):
    args = [f"model.name_or_path={tiny_export}", "lora.enabled=true", "deepspeed=zero3"]
    assert_refused(run_entry("cluster.finetune", *args, *dirs), "deepspeed.stage")


def test_finetune_refuses_a_seq_len_beyond_the_base_context(dirs, tiny_export, run_entry):
    # tiny_export has 64 positions.
    args = [f"model.name_or_path={tiny_export}", "trainer.seq_len=128"]
    assert_refused(run_entry("cluster.finetune", *args, *dirs), "trainer.seq_len")


def test_eval_of_a_directory_that_is_no_export(dirs, tmp_path, run_entry):
    assert_refused(run_entry("cluster.eval", f"export={tmp_path}", *dirs), "export")
