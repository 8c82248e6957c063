"""Faults around the artifacts a run leaves: an export killed half-way is never loaded, two
runs racing for one name never share it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cluster.runs.resolve import absolute_paths
from cluster.runs.run_dir import new_run_dir, release_unused
from cluster.schema import load_config
from cluster.serve import resolve_checkpoint
from schemas.fields import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

# Exports a tiny model with trainer/export.py, the process killed (os._exit, no cleanup)
# after the weights and config are written and before the tokenizer is.
EXPORT_SCRIPT = """
import os, sys, types
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
from trainer.export import export_hf

source, target, crash = sys.argv[1], sys.argv[2], sys.argv[3] == "crash"
tokenizer = AutoTokenizer.from_pretrained(source)
model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32,
                                   vocab_size=len(tokenizer)))
if crash:
    tokenizer.save_pretrained = lambda *a, **k: os._exit(9)
export_hf(types.SimpleNamespace(module=model), tokenizer, target, zero_stage=0, rank=0)
"""


def _export(source: Path, target: Path, crash: bool) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", EXPORT_SCRIPT, str(source), str(target), "crash" if crash else ""],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode


def test_an_export_killed_half_way_is_never_loaded(tiny_export, tmp_path):
    runs = tmp_path / "runs"
    export = runs / "pretrain" / "r1" / "export"
    assert _export(tiny_export, export, crash=True) == 9
    assert (export.parent / "export.partial" / "model.safetensors").is_file()  # it got that far
    assert not export.exists()
    serve_cfg = load_config("serve", [f"output_dir={runs}"])
    with pytest.raises(ConfigError, match="no export under output_dir"):
        resolve_checkpoint(serve_cfg)  # serve and eval look exports up this way
    # The same run exported again (a resumed run finishing) replaces the leftovers.
    assert _export(tiny_export, export, crash=False) == 0
    assert resolve_checkpoint(serve_cfg) == str(export)
    assert not (export.parent / "export.partial").exists()


def _cfg(tmp_path: Path, *overrides: str):
    return absolute_paths(
        load_config(
            "train", [f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path}", *overrides]
        )
    )


def test_two_runs_racing_for_one_name_the_second_is_refused(tmp_path):
    cfg = _cfg(tmp_path, "run_name=shared")
    name, run_dir = new_run_dir(cfg)
    assert name == "shared" and run_dir.is_dir()  # reserved at once, before any work
    with pytest.raises(ConfigError, match="run_name='shared' already exists"):
        new_run_dir(cfg)
    release_unused(run_dir)  # the first failed before writing anything: the name is free
    assert new_run_dir(cfg)[0] == "shared"


def test_unnamed_runs_started_in_the_same_second_get_distinct_names(tmp_path):
    cfg = _cfg(tmp_path)
    names, gate = [], threading.Barrier(8)

    def start() -> None:
        gate.wait()
        names.append(new_run_dir(cfg)[0])

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 8, names


def test_make_eval_never_overwrites_a_runs_side_by_side_report(tmp_path):
    import json

    from cluster.eval import default_output

    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    assert default_output(export) == export.parent / "eval.json"  # nothing there yet
    (export.parent / "eval.json").write_text(json.dumps({"export": str(export), "qa": {}}))
    assert default_output(export) == export.parent / "eval.json"  # make eval's own: replaced
    side_by_side = {"base": {"export": "b"}, "fine-tuned": {"export": str(export)}}
    (export.parent / "eval.json").write_text(json.dumps(side_by_side))
    assert default_output(export) == export.parent / "eval-export.json"
