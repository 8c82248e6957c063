"""Resolve once: the validated config + the checkpoint + the prepared data -> one frozen
RunSpec, validated after deriving, with nothing written back into the config."""

from __future__ import annotations

import ast
import copy
import dataclasses
from pathlib import Path

import pytest

from cluster.runs.resolve import absolute_paths, resolve_run
from cluster.schema import load_config
from cluster.training.recipes import PRETRAIN, SFT
from cluster.training.run import load_job_config
from dataprep.cache import PreparedData
from rundir.checkpoints import CheckpointInfo
from schemas.fields import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _prepared(train_rows: int, validation_rows: int = 8) -> PreparedData:
    stats = {
        "train": {"rows": train_rows},
        "validation": {"rows": validation_rows},
        "sequences": {"train": train_rows, "validation": validation_rows},
    }
    return PreparedData("/data/dataset", "/data/tokenizer", stats, cache_hit=True)


def _finetune(tmp_path, tiny_export, *overrides: str):
    base = [f"model.name_or_path={tiny_export}", f"output_dir={tmp_path}", "trainer.seq_len=64"]
    return load_job_config(SFT, [*base, *overrides])


def test_stop_at_step_is_checked_against_the_steps_epochs_derive(tmp_path, tiny_export):
    # finetune.yaml: trainer.max_steps=100 (used only with epochs=null), epochs=6. Before
    # the resolve, stop_at_step=200 was checked against that 100 and refused.
    cfg = _finetune(tmp_path, tiny_export, "trainer.stop_at_step=200")
    spec = resolve_run(cfg, objective="next_token", run_dir=tmp_path, prepared=_prepared(1336))
    # 16 rows per step (8 x 1 x 2 workers): 6 epochs of 1,336 rows = ceil(501) steps.
    assert spec.batch.global_batch == 16
    assert spec.max_steps == spec.cfg.trainer.max_steps == 501
    assert spec.end_step == 200
    # Past the derived steps it is still refused, naming them, once they are known.
    cfg = _finetune(tmp_path, tiny_export, "trainer.stop_at_step=600")
    with pytest.raises(ConfigError, match=r"trainer.stop_at_step=600.*max_steps=501"):
        resolve_run(cfg, objective="next_token", run_dir=tmp_path, prepared=_prepared(1336))


def test_without_epochs_stop_at_step_fails_before_anything_starts(tmp_path, tiny_export):
    with pytest.raises(ConfigError, match=r"trainer.stop_at_step=200.*max_steps=100"):
        _finetune(tmp_path, tiny_export, "epochs=null", "trainer.stop_at_step=200")
    with pytest.raises(ConfigError, match=r"trainer.stop_at_step=600.*max_steps=500"):
        load_config("train", ["trainer.stop_at_step=600"])


def test_the_spec_is_derived_without_writing_to_the_config(tmp_path, capsys):
    cfg = absolute_paths(
        load_config("train", ["scaling.num_workers=[1,2]", f"cache_dir={tmp_path}"])
    )
    before = copy.deepcopy(cfg)
    resume = CheckpointInfo(tmp_path / "step_0000010", step=10, world_size=2, global_batch=32)
    spec = resolve_run(
        cfg, objective="next_token", run_dir=tmp_path, prepared=_prepared(64), resume=resume
    )
    assert cfg == before  # the input is untouched
    # 32 = micro 8 x accum 2 x 2 workers: the checkpoint's batch is kept.
    assert spec.cfg.trainer.grad_accum_steps == 2 and spec.batch.global_batch == 32
    assert spec.paths.resume_from == str(resume.path)
    assert "reshard" in capsys.readouterr().out
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.objective = "dpo"


def test_too_few_sequences_for_one_global_batch_is_refused(tmp_path):
    cfg = load_config("train", [])
    with pytest.raises(ConfigError, match=r"train split packs into 15 sequences.*16"):
        resolve_run(cfg, objective="next_token", run_dir=tmp_path, prepared=_prepared(15))


def test_absolute_paths_returns_a_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("train", ["output_dir=runs", "cache_dir=cache"])
    resolved = absolute_paths(cfg)
    assert resolved.output_dir == str(tmp_path / "runs") and cfg.output_dir == "runs"


def test_recipes_name_their_job_and_objective():
    assert (PRETRAIN.job, PRETRAIN.objective, PRETRAIN.base_experiment) == (
        "train",
        "next_token",
        None,
    )
    assert SFT.base_experiment == "pretrain" and SFT.compare_as == ("base", "fine-tuned")


def _config_writes(tree: ast.AST) -> list[int]:
    """Lines that assign to an attribute of something named cfg, *_cfg or spec."""
    lines = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if target is not root and isinstance(root, ast.Name):
                if root.id in ("cfg", "spec") or root.id.endswith("_cfg"):
                    lines.append(node.lineno)
    return lines


def test_no_module_writes_to_a_config_after_validation():
    """The six places that rewrote the config after validation are gone; keep it so."""
    found = {}
    for package in ("cluster", "trainer", "serve", "dataprep", "evaluation", "planner"):
        for path in (REPO / package).rglob("*.py"):
            lines = _config_writes(ast.parse(path.read_text(), str(path)))
            if lines:
                found[str(path.relative_to(REPO))] = lines
    assert not found, f"config written after validation at {found}"
