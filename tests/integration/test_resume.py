"""Fault tolerance and exact resume on a real local Ray cluster.

Run A trains uninterrupted. Run B loses a Ray Train worker process to SIGKILL (found through
Ray's state API) after a checkpoint and recovers on its own. Run C stops at step 20 and a
second invocation continues it with resume=latest. B and C must end with A's weights, bit
for bit, and log A's per-step losses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny_runs import REFERENCE_RUN
from tracked_runs import history, run_of, runs_in

from cluster.runs.resume import choose_checkpoint
from cluster.schema import load_config
from cluster.train import main
from rundir.metrics_file import read_metrics
from schemas.fields import ConfigError

RUN = REFERENCE_RUN  # run A, uninterrupted, is the session's reference run


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_cache):
    root = tmp_path_factory.mktemp("resume")
    return [f"output_dir={root / 'runs'}", f"cache_dir={tiny_cache}"], root / "runs" / "ref"


def _train(dirs, *extra: str) -> None:
    assert main([*RUN, *dirs[0], *extra]) == 0


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["loss"] for r in rows}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = (
        load_file(a / "export" / "model.safetensors"),
        load_file(b / "export" / "model.safetensors"),
    )
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] == wb[name]).all(), f"{name} differs"  # bitwise, not approximately


@pytest.fixture(scope="module")
def run_a(reference_run):
    return reference_run


def _workers(ray, alive_only: bool = True) -> list:
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker")]
    if alive_only:
        filters.append(("state", "=", "ALIVE"))
    # This cluster's address: other Ray instances may run on the same machine.
    address = ray.get_runtime_context().gcs_address
    return list_actors(address=address, filters=filters, limit=1000)


def test_killed_worker_recovers_and_matches_the_uninterrupted_run(ray_cluster, dirs, run_a):
    run_b = dirs[1] / "b"
    errors: list[BaseException] = []

    def train():
        try:
            _train(dirs, "run_name=b")
        except BaseException as e:  # surfaced in the main thread below
            errors.append(e)

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 300
    pids: list[int] = []
    while len(pids) < 2 and time.monotonic() < deadline:
        pids = [a.pid for a in _workers(ray_cluster)]
        time.sleep(0.2)
    # Kill once Ray Train has registered the step-10 checkpoint (before that, recovery
    # would rightly start from scratch and prove less).
    snapshot = run_b / "checkpoint_manager_snapshot.json"
    while time.monotonic() < deadline:
        if snapshot.exists() and "step_0000010" in snapshot.read_text():
            break
        time.sleep(0.02)
    os.kill(pids[-1], signal.SIGKILL)  # a real process death, not an exception in the loop
    killed_at = max(_losses(run_b)) if (run_b / "metrics.jsonl").exists() else 0
    thread.join(timeout=600)
    assert not errors, errors
    assert killed_at < 40, "the run finished before the kill; the test proved nothing"
    # The killed process is dead and Ray Train started a new worker group in its place.
    workers = _workers(ray_cluster, alive_only=False)
    assert any(a.pid == pids[-1] and a.state == "DEAD" for a in workers)

    losses_a, losses_b = _losses(run_a), _losses(run_b)
    assert sorted(losses_b) == list(range(1, 41))
    assert losses_b == losses_a
    _assert_same_weights(run_a, run_b)
    # Still one MLflow run, finished, and no step twice: the restarted group redid the
    # steps after the step-10 checkpoint, and rank 0 logged only those the run lacked.
    (run,) = [r for r in runs_in(dirs[1].parent, "ref") if r.info.run_name == "b"]
    assert run_of(run_b).info.run_id == run.info.run_id and run.info.status == "FINISHED"
    tracked = history(dirs[1].parent, run.info.run_id, "train/loss")
    assert [s for s, _ in tracked] == list(range(1, 41))
    assert dict(tracked) == pytest.approx(losses_a)


def test_stop_and_resume_latest_matches_the_uninterrupted_run(ray_cluster, dirs, run_a):
    _train(dirs, "run_name=c1", "trainer.stop_at_step=20")
    c1 = dirs[1] / "c1"
    assert not (c1 / "export").exists() and (c1 / "step_0000020").is_dir()
    with (c1 / "metrics.jsonl").open("a") as f:
        f.write('{"step": 21, "loss": 4.')  # torn by a crash (or a full disk) mid-write
    _train(dirs, "run_name=c2", "resume=latest")
    c2 = dirs[1] / "c2"
    assert _losses(c2) == _losses(run_a)  # history carried over, then continued exactly
    _assert_same_weights(run_a, c2)
    # The old run is left as it was.
    assert max(_losses(c1)) == 20
    # The resumed job continued c1's MLflow run (c1's run directory named it): one run with
    # steps 1..40 once each, no run of its own.
    run = run_of(c2)
    assert run.info.run_id == run_of(c1).info.run_id and run.info.run_name == "c1"
    assert run.info.status == "FINISHED"
    assert "c2" not in {r.info.run_name for r in runs_in(dirs[1].parent, "ref")}
    tracked = history(dirs[1].parent, run.info.run_id, "train/loss")
    assert [s for s, _ in tracked] == list(range(1, 41))
    assert run.data.tags["zeroray.resumed.c2"].startswith("resume=latest, run_name=c2")


def test_an_older_checkpoint_resumes_on_its_own_worker_count_only(dirs, run_a, tmp_path):
    # Checkpoints written before the global batch was recorded cannot be resharded safely.
    old = tmp_path / "step_0000020"
    shutil.copytree(run_a / "step_0000020", old)
    for manifest in old.glob("manifest-rank*.json"):
        data = json.loads(manifest.read_text())
        del data["global_batch"]
        manifest.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="before zeroray recorded global batches"):
        main([*RUN, *dirs[0], f"resume={old}", "scaling.num_workers=1"])


def test_corrupt_shard_is_a_clear_error(dirs, run_a, tmp_path):
    broken = tmp_path / "run" / "step_0000020"
    shutil.copytree(run_a / "step_0000020", broken)
    shard = next(broken.rglob("*optim_states.pt"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    shard.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"{shard.name} fails its SHA-256 check"):
        main([*RUN, *dirs[0], f"resume={broken}"])


def test_interrupted_checkpoint_write_falls_back_to_the_previous_one(dirs, run_a, tmp_path, capsys):
    experiment = tmp_path / "runs" / "ref"
    run = experiment / "crashed"
    for name in ("step_0000010", "step_0000020"):
        shutil.copytree(run_a / name, run / name)
    shard = next((run / "step_0000020").rglob("*model_states.pt"))
    shard.write_bytes(shard.read_bytes()[:100])  # the write stopped part-way
    cfg = load_config("train", [*RUN, f"output_dir={tmp_path / 'runs'}", "resume=latest"])
    chosen = choose_checkpoint(cfg)
    assert chosen.name == "step_0000010" and chosen.step == 10
    assert "step_0000020" in capsys.readouterr().out
