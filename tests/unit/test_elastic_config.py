"""Elastic worker counts, up to the Ray Train config: `scaling.num_workers=[min, max]`, the
global batch every count in the range keeps, resuming into a range, the resource check, and
the worker-group history that metrics.jsonl, the summary and loss.png are made from. The
run itself (a node lost and returned) is tests/integration/two_nodes/test_elastic.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.ray_setup import check_resources
from cluster.schema import load_config
from cluster.training.run import build_trainer
from rundir.checkpoints import CheckpointInfo
from rundir.metrics_file import worker_segments
from schemas.batch import BatchPlan
from schemas.fields import ConfigError
from schemas.run_spec import RunPaths, RunSpec
from trainer.metrics import plot_loss


def test_a_range_is_elastic_and_a_count_or_equal_bounds_are_not():
    overrides = ["scaling.num_workers=[1,4]", "trainer.grad_accum_steps=3"]
    scaling = load_config("train", overrides).scaling
    assert scaling.elastic and (scaling.min_workers, scaling.max_workers) == (1, 4)
    assert list(scaling.worker_counts()) == [1, 2, 3, 4]
    for override, count in (("scaling.num_workers=3", 3), ("scaling.num_workers=[2,2]", 2)):
        scaling = load_config("train", [override]).scaling
        assert not scaling.elastic and scaling.worker_range() == (count, count)


@pytest.mark.parametrize("value", ["[2,1]", "[0,2]", "[1,2,3]", "[1.5,2]", "0", "two"])
def test_a_bad_worker_count_is_one_line_naming_the_field(value):
    with pytest.raises(ConfigError) as e:
        load_config("train", [f"scaling.num_workers={value}"])
    message = str(e.value)
    assert message.startswith("scaling.num_workers=") and "\n" not in message
    assert "[min, max] with 1 <= min <= max" in message


def test_every_count_of_the_range_keeps_the_global_batch():
    cfg = load_config(
        "train",
        ["scaling.num_workers=[2,4]", "trainer.grad_accum_steps=3", "trainer.micro_batch_size=2"],
    )
    micro = cfg.trainer.micro_batch_size
    plan = BatchPlan.of(cfg.trainer, cfg.scaling)
    batches = {w: plan.accum_for(w) * micro * w for w in (2, 3, 4)}
    assert batches == {2: 24, 3: 24, 4: 24}
    # A fixed count keeps its own accumulation.
    fixed = load_config("train", ["scaling.num_workers=2", "trainer.grad_accum_steps=3"])
    assert BatchPlan.of(fixed.trainer, fixed.scaling).accum_for(2) == 3


def test_a_range_that_cannot_keep_the_global_batch_names_a_fix():
    with pytest.raises(ConfigError, match=r"split evenly over 2 workers") as e:
        load_config("train", ["scaling.num_workers=[1,3]"])
    fix = int(str(e.value).split("trainer.grad_accum_steps=")[-1].split()[0])
    cfg = load_config("train", ["scaling.num_workers=[1,3]", f"trainer.grad_accum_steps={fix}"])
    assert all(fix * 3 % w == 0 for w in cfg.scaling.worker_counts())


def _checkpoint(world: int, batch: int | None) -> CheckpointInfo:
    return CheckpointInfo(
        Path("/runs/x/step_0000010"), step=10, world_size=world, global_batch=batch
    )


def test_resuming_into_a_range_keeps_the_checkpoints_global_batch(capsys):
    cfg = load_config("train", ["scaling.num_workers=[1,2]", "trainer.micro_batch_size=4"])
    kept = _keep(cfg, _checkpoint(world=2, batch=16))
    assert kept.grad_accum_steps == 2  # 16 = 4 x 2 x 2 workers, or 4 x 4 x 1
    assert kept.global_batch == 16 and cfg.trainer.grad_accum_steps == 1  # no write-back
    cfg = load_config("train", ["scaling.num_workers=[1,3]", "trainer.grad_accum_steps=2"])
    with pytest.raises(ConfigError, match=r"\[1, 3\].*which 3 workers x micro_batch_size 8"):
        _keep(cfg, _checkpoint(world=2, batch=16))


def _keep(cfg, info: CheckpointInfo) -> BatchPlan:
    plan = BatchPlan.of(cfg.trainer, cfg.scaling)
    return plan.keeping(info.global_batch, str(info.path), info.world_size)


def test_an_elastic_run_needs_room_for_its_minimum_only(capsys):
    overrides = ["scaling.num_workers=[2,4]", "trainer.grad_accum_steps=3"]
    scaling = load_config("train", overrides).scaling
    check_resources(scaling, {"CPU": 3})
    assert "the cluster has room for 3 now" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"needs 2 CPUs; allowed: at most the cluster's 1"):
        check_resources(scaling, {"CPU": 1})


def test_ray_train_gets_the_range_and_the_resize_interval():
    cfg = load_config(
        "train", ["scaling.num_workers=[1,2]", "scaling.elastic_resize_monitor_interval_s=5"]
    )
    paths = RunPaths(run_dir="/r", dataset_dir="/d", tokenizer_dir="/t", export_dir="/e")

    def spec(cfg) -> RunSpec:
        return RunSpec(cfg, paths, BatchPlan.of(cfg.trainer, cfg.scaling))

    scaling = build_trainer(spec(cfg), "x").scaling_config
    assert scaling.num_workers == (1, 2) and scaling.elasticity_enabled
    assert scaling.elastic_resize_monitor_interval_s == 5
    fixed = load_config("train", ["scaling.num_workers=2"])
    assert build_trainer(spec(fixed), "x").scaling_config.num_workers == 2


ELASTIC_ROWS = [
    {"step": 0, "val_loss": 6.2},
    {"step": 10, "loss": 6.0, "workers": 2, "started_at_step": 0},
    {"step": 20, "loss": 5.8, "workers": 2},
    # The node went at step 27; the one-worker group loaded the step-25 checkpoint.
    {"step": 30, "loss": 5.7, "workers": 1, "started_at_step": 25},
    {"step": 40, "loss": 5.6, "workers": 1},
    # Killed and restarted on the same count: a restart, not a resize.
    {"step": 50, "loss": 5.5, "workers": 1, "started_at_step": 40},
    {"step": 60, "loss": 5.4, "workers": 2, "started_at_step": 50},
    {"step": 60, "val_loss": 5.3},
]


def test_worker_segments_start_where_each_group_took_over():
    assert worker_segments(ELASTIC_ROWS) == [
        {"workers": 2, "first_step": 1, "last_step": 20},
        {"workers": 1, "first_step": 26, "last_step": 40},
        {"workers": 1, "first_step": 41, "last_step": 50},
        {"workers": 2, "first_step": 51, "last_step": 60},
    ]
    # Rows of a run that never restarted: one segment; rows without counts: none.
    assert worker_segments(ELASTIC_ROWS[:3]) == [{"workers": 2, "first_step": 1, "last_step": 20}]
    assert worker_segments([{"step": 10, "loss": 1.0}]) == []


def test_the_loss_picture_marks_each_restart(tmp_path, monkeypatch):
    import matplotlib.axes

    marks, labels = [], []
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", lambda self, x, **k: marks.append(x))
    original = matplotlib.axes.Axes.annotate
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "annotate",
        lambda self, text, *a, **k: (labels.append(text), original(self, text, *a, **k))[1],
    )
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in ELASTIC_ROWS))
    plot_loss(metrics, tmp_path / "loss.png")
    assert marks == [25.5, 40.5, 50.5]
    assert labels == ["2 -> 1 workers", "restart", "1 -> 2 workers"]
    assert (tmp_path / "loss.png").stat().st_size > 10_000
