"""`make finish`: the request is left only in a running run's directory, and the workers'
FinishRequest ends the run on the first log step after it (the run on two workers that ends
this way is two_nodes/test_elastic.py's)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest
import torch
import torch.distributed as dist

from cluster.ops.finish import main as finish_main
from cluster.ops.finish import request_finish
from cluster.training.summary import write_and_print
from rundir import layout
from schemas.fields import ConfigError
from trainer.run_components import Checkpointer, Evaluator, FinishRequest


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs" / "pretrain" / "r1"
    run.mkdir(parents=True)
    (run / layout.CONFIG).write_text("seed: 1\n")
    return run


@pytest.fixture(scope="module")
def one_rank_group(tmp_path_factory):
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_request_lands_in_the_run_directory(run_dir):
    assert finish_main([str(run_dir)]) == 0
    assert (run_dir / layout.FINISH_REQUEST).is_file()


def test_a_directory_that_is_no_run_or_a_finished_run_is_refused(run_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"RUN=.* is not a run directory \(no config.yaml\)"):
        request_finish(str(tmp_path))
    (run_dir / layout.EXPORT).mkdir()
    (run_dir / layout.EXPORT / layout.EXPORT_MARKER).write_text("{}")
    with pytest.raises(ConfigError, match="has finished already"):
        request_finish(str(run_dir))
    assert not list(tmp_path.rglob(layout.FINISH_REQUEST))
    with pytest.raises(ConfigError, match="RUN: one run directory or URI, got 0"):
        finish_main([])


def test_the_run_ends_on_the_first_log_step_after_the_request(run_dir, one_rank_group):
    finish = FinishRequest(str(run_dir), every=10, rank=0, device=torch.device("cpu"))
    # Off log steps, and with no request, nothing ends (and no rank waits on a broadcast).
    assert not finish.when_due(10, end_step=100) and not finish.when_due(13, end_step=100)
    request_finish(str(run_dir))
    assert not finish.when_due(15, end_step=100)  # not a log step
    finish.last_look -= 60  # the rate limit between looks has passed
    assert finish.when_due(20, end_step=100) and finish.granted
    evaluator = Evaluator(None, None, None, 1, "cpu", every=50, end=100)
    checkpointer = Checkpointer(None, every=50, end_step=100, rank=0, world=1)
    assert finish.end_here(20, evaluator, checkpointer) == 20
    assert evaluator.end_step == checkpointer.end_step == 20  # both act at step 20 now
    finish.withdraw()  # after the export: a later resume of the run starts clean
    assert not (run_dir / layout.FINISH_REQUEST).exists()


def test_the_summary_says_the_run_ended_on_request(run_dir):
    summary = {
        "run_dir": str(run_dir), "export_dir": str(run_dir / "export"), "exported": True,
        "steps": 20, "max_steps": 100, "loss_png": "l.png", "metrics_jsonl": "m.jsonl",
        "tensorboard_dir": "tb", "initial_val_loss": 6.0, "final_val_loss": 5.0,
        "initial_val_ppl": 400.0, "final_val_ppl": 150.0, "tokens_per_s": 1000.0, "mfu": 0.1,
        "wall_s": 3.0, "samples": [],
    }  # fmt: skip
    with redirect_stdout(io.StringIO()) as out:
        write_and_print(summary, run_dir)
    assert "finished      : at step 20 of 100, as `make finish` asked" in out.getvalue()
    with redirect_stdout(io.StringIO()) as out:
        write_and_print(summary | {"steps": 100}, run_dir)
    assert "finished      :" not in out.getvalue()
