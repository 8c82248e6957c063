"""Tracking without a cluster: the config flattened into params, rank 0's step guard, a
tracker that raises (training goes on), the check before the run, a real embedded MLflow
store (create, continue, register), and tracking=none never importing MLflow."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster.schema import load_config
from cluster.training.tracking import check_tracking, config_params, open_tracking, store_uri
from rundir.checkpoints import CheckpointInfo
from schemas.fields import ConfigError
from tracking.guard import Guard
from tracking.metrics_logger import MetricsLogger, metric_key, numeric_metrics
from tracking.params import batches, flatten
from tracking.store import read_record

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- params ---------------------------------------------------------------------------------


def test_flatten_names_every_leaf_by_its_dotted_path():
    config = {
        "trainer": {"max_steps": 40, "stop_at_step": None, "lr": 1e-3},
        "data": {"paths": ["/a/*.txt", "/b"], "source": "text-files", "extra": {}},
        "seed": 1,
        "resume": "latest",
        "flag": True,
    }
    assert flatten(config) == {
        "trainer.max_steps": "40",
        "trainer.stop_at_step": "null",
        "trainer.lr": "0.001",
        "data.paths": '["/a/*.txt", "/b"]',
        "data.source": "text-files",
        "data.extra": "{}",
        "seed": "1",
        "resume": "latest",
        "flag": "true",
    }


def test_a_long_value_is_cut_to_mlflows_limit_and_params_go_in_batches_of_100():
    params = flatten({"long": "x" * 7000, **{f"k{i}": i for i in range(230)}})
    assert len(params["long"]) == 6000 and params["long"].endswith("...")
    sizes = [len(b) for b in batches(params)]
    assert sizes == [100, 100, 31] and sum(sizes) == len(params)


def test_the_resolved_config_flattens_into_every_setting():
    cfg = load_config("train", ["trainer.max_steps=7"])
    params = config_params(cfg)
    assert params["trainer.max_steps"] == "7" and params["tracking.backend"] == "mlflow"
    assert params["model.num_layers"] == str(cfg.model.num_layers)
    assert len(params) > 80  # every leaf of every section


# ---- rank 0's metrics logger: names, step guard, failures -----------------------------------


def test_metric_names_and_what_is_not_a_curve():
    row = {"loss": 2.5, "lr": 1e-3, "val_loss": 3.0, "workers": 2, "started_at_step": 10}
    row |= {"startup": {"worker_start": 1.0}, "flag": True}
    assert numeric_metrics(row) == {
        "train/loss": 2.5,
        "train/lr": 1e-3,
        "val/loss": 3.0,
        "train/workers": 2.0,
    }
    assert metric_key("val_reward_accuracy") == "val/reward_accuracy"


class FakeSink:
    """A run that already holds steps up to ``last``; records what it is sent."""

    def __init__(self, last: int = -1, fail_at: int | None = None):
        self.last, self.fail_at, self.logged, self.writes = last, fail_at, [], 0

    def last_step(self) -> int:
        return self.last

    def log(self, records):
        self.writes += 1
        for step, _, metrics in records:
            if step == self.fail_at:
                raise ConnectionError("tracking server went away\nsecond line")
            self.logged.append((step, metrics))


def _run_logger(sink, steps, **kwargs) -> MetricsLogger:
    logger = MetricsLogger(lambda: sink, **kwargs)
    for step in steps:
        logger.log(step, {"loss": float(step)})
    logger.close()
    return logger


def test_a_restarted_group_never_logs_a_step_twice():
    # The first group logged up to step 15, then died; the new group resumes from the step-10
    # checkpoint and redoes 11..15: only 16.. reach the run.
    sink = FakeSink(last=15)
    logger = _run_logger(sink, range(11, 21))
    assert [s for s, _ in sink.logged] == list(range(16, 21))
    assert logger.skipped == list(range(11, 16))


def test_steps_reach_the_run_in_order_and_a_repeated_step_is_dropped():
    sink = FakeSink()
    _run_logger(sink, [0, 2, 4, 4, 3, 6])
    assert [s for s, _ in sink.logged] == [0, 2, 4, 6]
    assert sink.logged[0][1] == {"train/loss": 0.0}


def test_a_tracker_that_raises_mid_run_turns_tracking_off_in_one_line(capsys):
    sink = FakeSink(fail_at=4)
    logger = _run_logger(sink, [2, 4, 6, 8])
    assert [s for s, _ in sink.logged] == [2]  # nothing after the failure
    assert not logger.guard.on
    lines = [line for line in capsys.readouterr().out.splitlines() if "tracking" in line]
    assert len(lines) == 1, lines
    assert "failed (ConnectionError: tracking server went away)" in lines[0]
    assert lines[0].endswith("tracking is off for the rest of this run")


def test_a_store_that_cannot_be_opened_costs_the_loop_nothing(capsys):
    def refuse():
        raise PermissionError("no")

    logger = MetricsLogger(refuse)
    for step in range(100):
        logger.log(step, {"loss": 1.0})  # never raises, never waits
    logger.close()
    assert not logger.guard.on and "opening the run failed" in capsys.readouterr().out


class SlowSink(FakeSink):
    """A store that takes nothing until ``release`` is set."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def log(self, records):
        self.release.wait(10)
        super().log(records)


def test_the_loop_never_waits_on_a_slow_store():
    sink = SlowSink()
    logger = MetricsLogger(lambda: sink)
    for step in range(1, 6):
        logger.log(step, {"loss": 1.0})  # returns at once although the store is stuck
    assert sink.logged == []
    sink.release.set()
    logger.close()
    assert [s for s, _ in sink.logged] == [1, 2, 3, 4, 5]
    assert sink.writes <= 2  # what queued up while the store was busy went in one write


def test_flush_returns_once_every_step_logged_so_far_is_in_the_store():
    """Rank 0 flushes before each checkpoint is reported: a group killed right after it
    restarts from that step and never logs the steps before it again."""
    sink = SlowSink()
    logger = MetricsLogger(lambda: sink)
    for step in range(1, 11):
        logger.log(step, {"loss": 1.0})
    flushed = threading.Thread(target=logger.flush)
    flushed.start()
    flushed.join(0.3)
    assert flushed.is_alive() and sink.logged == []  # waits on the store, not past it
    sink.release.set()
    flushed.join(10)
    assert not flushed.is_alive()
    assert [s for s, _ in sink.logged] == list(range(1, 11))  # all of them, at return
    logger.log(11, {"loss": 1.0})
    logger.close()
    assert [s for s, _ in sink.logged][-1] == 11 and logger.guard.on


def test_a_store_that_hangs_costs_one_flush_its_timeout_then_tracking_is_off(capsys):
    hung = threading.Event()

    class HungSink(FakeSink):
        def log(self, records):
            hung.wait(10)

    logger = MetricsLogger(lambda: HungSink(), close_timeout_s=0.3)
    logger.log(1, {"loss": 1.0})
    started = time.monotonic()
    logger.flush()  # waits its timeout, then turns tracking off in one line
    assert not logger.guard.on and "did not take the metrics" in capsys.readouterr().out
    logger.flush()  # nothing more is queued: no second wait
    assert time.monotonic() - started < 2
    hung.set()
    logger.close()


def test_guard_returns_values_until_the_first_failure():
    guard = Guard()
    assert guard("adding", lambda a, b: a + b, 1, 2) == 3
    assert guard("failing", lambda: 1 / 0) is None and not guard.on
    assert guard("adding", lambda: 5) is None  # off: nothing runs any more


# ---- the check before the run -----------------------------------------------------------------


def test_an_unreachable_server_is_one_line_before_anything_starts(tmp_path):
    uri = "http://127.0.0.1:9"  # the discard port: nothing answers
    cfg = load_config("train", [f"output_dir={tmp_path}", f"tracking.uri={uri}"])
    with pytest.raises(ConfigError) as e:
        check_tracking(cfg)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"tracking.uri='{uri}' cannot be reached")
    assert "tracking=none" in message and "tracking.if_unreachable=continue" in message


def test_with_if_unreachable_continue_the_run_goes_on_untracked(tmp_path, capsys):
    overrides = ["tracking.uri=http://127.0.0.1:9", "tracking.if_unreachable=continue"]
    cfg = load_config("train", [f"output_dir={tmp_path}", *overrides])
    assert check_tracking(cfg) is None
    assert "tracking is off for this run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tracking.uri=file:///tmp/mlruns", "tracking.uri='file:///tmp/mlruns' is not allowed"),
        ("tracking.backend=wandb", "tracking.backend='wandb' is not allowed: one of mlflow, none"),
        ("tracking.if_unreachable=retry", "tracking.if_unreachable='retry' is not allowed"),
    ],
)
def test_bad_tracking_settings_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config("train", [override])


def test_the_embedded_store_lives_under_output_dir(tmp_path):
    cfg = load_config("train", [f"output_dir={tmp_path}"])
    assert store_uri(cfg) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert check_tracking(cfg) == store_uri(cfg)
    assert check_tracking(load_config("train", ["tracking=none"])) is None


# ---- a real embedded store --------------------------------------------------------------------


def test_a_resumed_job_continues_its_run_and_registers_its_export(tmp_path):
    """The driver's side against a real SQLite store: a job's run, a resume of it (its run
    directory names the run) continuing the same run, and the export's model version."""
    from mlflow import MlflowClient

    cfg = load_config("train", [f"output_dir={tmp_path}", "experiment=exp"])
    uri = check_tracking(cfg)
    first_dir, second_dir = tmp_path / "exp" / "one", tmp_path / "exp" / "two"
    first_dir.mkdir(parents=True), second_dir.mkdir()
    first = open_tracking(cfg, uri, first_dir, None)
    assert read_record(first_dir)["run_id"] == first.target.run_id
    first.run.log_params({"a": "1", "b": "2"})
    first.end("KILLED")

    # As rundir.checkpoints finds it: a path (or a URI) as a string.
    checkpoint = CheckpointInfo(str(first_dir / "step_0000010"), 10, 2)
    second = open_tracking(cfg, uri, second_dir, checkpoint)
    assert second.target.run_id == first.target.run_id and second.run.continued
    assert second.run.log_params({"a": "1", "b": "3", "c": "4"}) == {"b": "3"}
    (second_dir / "export").mkdir()
    (second_dir / "export" / "config.json").write_text("{}")
    (second_dir / "loss.png").write_bytes(b"png")
    second.data_fingerprint = "data-0123"
    second.record_end(cfg, second_dir)

    client = MlflowClient(uri)
    runs = client.search_runs([second.run.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params == {"a": "1", "b": "2", "c": "4"}  # logged params never change
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == ["loss.png"]
    (version,) = client.search_model_versions("name='zeroray-exp'")
    assert version.source == str(second_dir / "export")
    assert version.tags["lineage.run_id"] == runs[0].info.run_id
    assert version.tags["lineage.data_fingerprint"] == "data-0123"


# ---- tracking=none ----------------------------------------------------------------------------


NO_MLFLOW = """
import sys
from pathlib import Path
from cluster.schema import load_config
from cluster.training.tracking import check_tracking, open_tracking
from trainer.loop import open_tracker
from trainer.run_components import Reporter
from schemas.run_spec import RunSpec, RunPaths

cfg = load_config("train", ["tracking=none", "output_dir=" + sys.argv[1]])
uri = check_tracking(cfg)
tracking = open_tracking(cfg, uri, Path(sys.argv[1]), None)
tracking.record_end(cfg, Path(sys.argv[1]))
spec = RunSpec(cfg, RunPaths("r", "d", "t", "e"), None, tracking=tracking.target)
assert open_tracker(spec) is None
import trainer.engine  # what a worker loads to build its engine: DeepSpeed
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")
print("mlflow modules:", loaded)
import mlflow  # still importable afterwards, for whoever tracks
print("mlflow importable:", mlflow.__name__)
sys.exit(1 if loaded else 0)
"""


def test_with_tracking_none_mlflow_is_never_imported(tmp_path):
    """The driver's tracking steps, the workers' tracker choice and their DeepSpeed import
    (whose autotuner imports MLflow unless it is hidden), in a fresh interpreter (this one
    may have imported MLflow already)."""
    out = subprocess.run(
        [sys.executable, "-c", NO_MLFLOW, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mlflow modules: []" in out.stdout
    assert "mlflow importable: mlflow" in out.stdout
    assert not (tmp_path / "mlflow.db").exists()
