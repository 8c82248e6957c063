"""Directories another local user could make first are never used: the resharding
conversion (unpickled afterwards) goes inside a private per-user directory whose owner and
mode are checked, and the local head's Ray temp dir is a fresh mkdtemp. `make cluster-down`
signals the recorded pid only while it is still the head `make cluster-up` started, and
only then do this checkout's jobs attach to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from cluster.ops import local_head
from rundir.checkpoints import CheckpointError
from trainer import restore


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_the_universal_conversion_goes_inside_a_private_directory(temp_root):
    target = restore.universal_target("/ckpt/run/step_10", 4)
    parent = temp_root / f"zeroray-{os.getuid()}"
    assert target.parent == parent and target.name.startswith("universal-")
    assert parent.stat().st_mode & 0o777 == 0o700
    assert restore.universal_target("/ckpt/run/step_10", 4) == target  # every rank alike


def test_a_pre_made_world_writable_directory_is_refused(temp_root):
    parent = temp_root / f"zeroray-{os.getuid()}"
    parent.mkdir()
    parent.chmod(0o777)  # as another user's `mkdir -m 777` would leave it
    with pytest.raises(CheckpointError, match="is not private .*mode 0700"):
        restore.universal_target("/ckpt/run/step_10", 4)


def test_a_link_in_its_place_is_refused(temp_root):
    (temp_root / "elsewhere").mkdir(mode=0o700)
    (temp_root / f"zeroray-{os.getuid()}").symlink_to(temp_root / "elsewhere")
    with pytest.raises(CheckpointError, match="is not private"):
        restore.universal_target("/ckpt/run/step_10", 4)


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_a_directory_of_another_user_is_refused(temp_root):
    parent = temp_root / f"zeroray-{os.getuid()}"
    parent.mkdir(mode=0o700)
    os.chown(parent, 65534, 65534)
    with pytest.raises(CheckpointError, match="owner uid 65534"):
        restore.universal_target("/ckpt/run/step_10", 4)


def test_the_local_head_gets_a_fresh_private_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(local_head, "HEAD_DIR", tmp_path / "head")
    seen = []

    def fake_start(flags, log_path):
        seen.extend(f.split("=", 1)[1] for f in flags if f.startswith("--temp-dir="))
        raise RuntimeError("stop here")  # nothing is started

    monkeypatch.setattr(local_head, "start_node", fake_start)
    try:
        for _ in range(2):
            with pytest.raises(RuntimeError, match="stop here"):
                local_head.up([])
        first, second = seen
        # Not the old predictable /tmp/zeroray-ray-<uid>, which another user could make
        # first: a new name each time, made by this user, mode 0700.
        assert first != second and first != f"/tmp/zeroray-ray-{os.getuid()}"
        for made in (first, second):
            info = os.stat(made)
            assert info.st_uid == os.getuid() and info.st_mode & 0o777 == 0o700
            assert len(made) < 40  # Ray's unix sockets go below it (a ~107-byte path limit)
    finally:
        for made in seen:
            os.rmdir(made)


def _sleeper(*argv: str) -> subprocess.Popen:
    code = "import time; time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", code, *argv], start_new_session=True)


def _wait_alive(proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while "sleep" not in " ".join(psutil.Process(proc.pid).cmdline()):
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("record", ["plain pid", "other start time", "not a ray head"])
def test_cluster_down_never_signals_a_pid_that_is_not_its_head(tmp_path, monkeypatch, record):
    monkeypatch.setattr(local_head, "HEAD_DIR", tmp_path)
    argv = ("ray", "start", "--head") if record == "other start time" else ()
    proc = _sleeper(*argv)
    try:
        _wait_alive(proc)
        created = psutil.Process(proc.pid).create_time()
        text = {
            "plain pid": str(proc.pid),  # what `up` recorded before; unverifiable now
            "other start time": json.dumps({"pid": proc.pid, "create_time": created - 60}),
            "not a ray head": json.dumps({"pid": proc.pid, "create_time": created}),
        }[record]
        (tmp_path / "pid").write_text(text)
        assert local_head.down() == 0
        time.sleep(0.3)
        assert proc.poll() is None, "down() killed a process that is not its head"
        assert not (tmp_path / "pid").exists()  # the stale record is gone
    finally:
        proc.kill()
        proc.wait()


def test_cluster_down_stops_the_head_it_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(local_head, "HEAD_DIR", tmp_path)
    proc = _sleeper("ray", "start", "--block", "--head")
    try:
        _wait_alive(proc)
        local_head._record_head(proc.pid, str(tmp_path))
        assert local_head.recorded_head() == proc.pid
        assert local_head.down() == 0
        assert proc.wait(timeout=10) is not None
    finally:
        proc.kill()
        proc.wait()


def test_jobs_attach_to_this_checkouts_running_local_head_only(tmp_path, monkeypatch):
    from cluster import ray_setup

    monkeypatch.setattr(local_head, "HEAD_DIR", tmp_path / "head")
    (tmp_path / "head").mkdir()
    temp_dir = tmp_path / "ray-temp"  # where `ray start --temp-dir` writes the GCS address
    temp_dir.mkdir()
    (temp_dir / "ray_current_cluster").write_text("127.0.0.1:6390\n")
    not_a_head, head = _sleeper(), _sleeper("ray", "start", "--block", "--head")
    try:
        for proc in (not_a_head, head):
            _wait_alive(proc)
            local_head._record_head(proc.pid, str(temp_dir))
            expected = str(temp_dir) if proc is head else None
            assert local_head.head_temp_dir() == expected

        # init_ray connects there instead of starting a cluster; RAY_ADDRESS comes first.
        calls = []
        monkeypatch.setattr(ray_setup.ray, "is_initialized", lambda: False)
        monkeypatch.setattr(
            ray_setup.ray, "init", lambda **kw: calls.append((kw["address"], kw.get("_temp_dir")))
        )
        monkeypatch.setattr(ray_setup.ray, "cluster_resources", lambda: {"CPU": 2.0})
        monkeypatch.setattr(ray_setup, "_autoscaler_max_resources", lambda: None)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        assert ray_setup.init_ray() == {"CPU": 2.0}
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
        ray_setup.init_ray()
        assert calls == [(None, str(temp_dir)), ("10.0.0.5:6379", None)]
        head.kill()
        head.wait()
        assert local_head.head_temp_dir() is None  # the head is gone: start a cluster
    finally:
        for proc in (not_a_head, head):
            proc.kill()
            proc.wait()


def test_cluster_up_records_the_head_and_its_temp_dir_then_down_stops_it(tmp_path, monkeypatch):
    """`up`'s whole success path, with a stand-in for `ray start` (a process named like one)
    and for the Jobs API's answer."""
    monkeypatch.setattr(local_head, "HEAD_DIR", tmp_path / "head")
    started = []

    def fake_start(flags, log_path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started.append(_sleeper("ray", "start", "--block", "--head"))
        _wait_alive(started[-1])
        return started[-1]

    monkeypatch.setattr(local_head, "start_node", fake_start)
    monkeypatch.setattr(local_head, "wait_for_jobs_api", lambda address, proc: None)
    try:
        assert local_head.up([]) == 0
        [head] = started
        assert local_head.recorded_head() == head.pid
        assert (tmp_path / "head" / "address").read_text() == "http://127.0.0.1:8265\n"
        record = json.loads((tmp_path / "head" / "pid").read_text())
        assert record["temp_dir"].startswith("/tmp/zeroray-ray-")
        assert local_head.down() == 0
        assert head.wait(timeout=10) is not None
        os.rmdir(record["temp_dir"])  # empty: nothing started there
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
