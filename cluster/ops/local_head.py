"""A local Ray head node for people without a cluster: `make cluster-up` / `make cluster-down`.

python -m cluster.ops.local_head up [extra `ray start` flags]   # e.g. --num-cpus=8
python -m cluster.ops.local_head down

`up` runs `ray start --head --block` in the background, records its pid and start time under
cache/ray-head/ and waits until the Jobs API answers. `down` stops exactly that process (Ray
drains the node and stops what it started) instead of `ray stop`, which would end every Ray
process of this user on the machine, other clusters and test runs included; a recorded pid
that now names another process (the head died, the pid was reused) is never signalled. The
head keeps its own temp dir, a fresh private one (mkdtemp: mode 0700, a name no other local
user can take first), so that a bare `ray.init()` elsewhere (a test session, another checkout)
never attaches to it by accident. This checkout's jobs attach on purpose: `head_temp_dir`
names it to `init_ray` (cluster/ray_setup.py) while it runs, and `make train` then starts
no Ray of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from cluster.cli import run_cli
from cluster.serve import ingress_env
from console import log
from schemas.fields import ConfigError
from schemas.jobs import ServeJobConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAD_DIR = REPO_ROOT / "cache" / "ray-head"
DASHBOARD_PORT = 8265
# The head's temp dir is made under this prefix in /tmp: short, because Ray puts unix sockets
# under it (a path limit of ~107 bytes).
TEMP_PREFIX = "zeroray-ray-"


def node_env(state_dir: Path) -> dict:
    """The environment for `ray start`. A job's entrypoint is `python -m cluster.train`, so
    `python` must be this interpreter: a bin/ holding only a `python` that execs it goes
    first on PATH. (A symlink would lose the venv; putting the venv's bin/ first would also
    switch the `ninja` DeepSpeed's JIT build uses, and another ninja rebuilds the cached op,
    a minute each time.)"""
    bin_dir = state_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # GCS listens on every interface whatever --node-ip-address says (Ray maps 127.0.0.1 to
    # the node's address), so token authentication stays on, and a worker node joining the
    # head needs the same mode set explicitly (only a head turns it on by itself).
    env.setdefault("RAY_AUTH_MODE", "token")
    # SIGTERM drains a node for up to 30 s so Serve can move replicas away (a Kubernetes
    # rollout); a local node has nowhere to move them, and stops at once.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    # An app deployed here (`serve deploy`) gets `make serve`'s ingress: Serve reads it from
    # the node's environment, once, at start-up.
    default = ServeJobConfig()
    for key, value in ingress_env(default.ingress, default.throughput_optimized).items():
        env.setdefault(key, value)
    return env


def start_node(flags: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """`ray start --block FLAGS` in its own session, ``env`` added to its environment; the
    caller stops it with stop_node."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ray = Path(sys.executable).parent / "ray"
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [str(ray), "start", "--block", "--disable-usage-stats", *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=node_env(log_path.parent) | (env or {}),
            start_new_session=True,
        )


def wait_for_jobs_api(address: str, proc: subprocess.Popen | None, timeout_s: float = 120):
    """Poll until the Jobs API at ``address`` answers; a JobSubmissionClient."""
    from cluster.ops.submit import connect

    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"`ray start` exited with code {proc.returncode}")
        try:
            return connect(address)
        except ConfigError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def stop_node(*pids: int, grace_s: float = 60) -> None:
    """SIGTERM to `ray start --block`: it drains its node and stops the processes it
    started. A process group is killed only if that does not finish in time. Several nodes
    are stopped together, so their drains overlap."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)  # start_new_session made pid its group's id
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def recorded_head() -> int | None:
    """The pid of the head `up` recorded, if that very process still runs: the same start
    time and a `ray start ... --head` command line. None otherwise (no record, an older
    record without a start time, a head that died and whose pid the OS gave to another
    process): such a pid must never be signalled."""
    try:
        record = json.loads((HEAD_DIR / "pid").read_text())
        proc = psutil.Process(record["pid"])
        same = abs(proc.create_time() - record["create_time"]) < 0.01
        command = proc.cmdline()
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return record["pid"] if same and "start" in command and "--head" in command else None


def _record_head(pid: int, temp_dir: str) -> None:
    record = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "temp_dir": temp_dir}
    (HEAD_DIR / "pid").write_text(json.dumps(record) + "\n")


def head_temp_dir() -> str | None:
    """The temp dir of the head `up` started from this checkout, while that very process
    runs and has written its address there; None otherwise. `ray.init(_temp_dir=...)`
    finds the head through it, as a bare `ray.init()` finds a `ray start` in /tmp/ray."""
    if recorded_head() is None:
        return None
    try:
        temp_dir = Path(json.loads((HEAD_DIR / "pid").read_text())["temp_dir"])
    except (OSError, ValueError, KeyError):
        return None  # a record from before temp_dir was kept
    return str(temp_dir) if (temp_dir / "ray_current_cluster").is_file() else None


def up(extra_flags: list[str]) -> int:
    pid_file = HEAD_DIR / "pid"
    if (pid := recorded_head()) is not None:
        raise ConfigError(
            f"a head started by `make cluster-up` is already running (pid {pid}); "
            "allowed: `make cluster-down` first"
        )
    port = DASHBOARD_PORT
    for flag in extra_flags:
        if flag.startswith("--dashboard-port="):
            port = int(flag.split("=", 1)[1])
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir="/tmp")
    flags = [
        "--head",
        "--dashboard-host=127.0.0.1",  # the Jobs API is reachable from this machine only
        f"--dashboard-port={DASHBOARD_PORT}",
        f"--temp-dir={temp_dir}",
        *extra_flags,  # later flags win: --num-cpus=8, --dashboard-port=8266, ...
    ]
    proc = start_node(flags, HEAD_DIR / "ray-start.log")
    _record_head(proc.pid, temp_dir)
    address = f"http://127.0.0.1:{port}"
    try:
        wait_for_jobs_api(address, proc)
    except (RuntimeError, ConfigError) as e:
        stop_node(proc.pid, grace_s=10)
        pid_file.unlink(missing_ok=True)
        start_log = HEAD_DIR / "ray-start.log"
        print(start_log.read_text()[-2000:], file=sys.stderr)
        raise ConfigError(f"the head did not come up ({e}); see {start_log}") from None
    (HEAD_DIR / "address").write_text(address + "\n")
    log.info(f"Ray head running (pid {proc.pid}); Jobs API and dashboard: {address}")
    log.info("next: make submit JOB=train; stop it with make cluster-down")
    return 0


def down() -> int:
    pid_file = HEAD_DIR / "pid"
    if not pid_file.is_file():
        log.info("no head started by `make cluster-up` is recorded; nothing to stop")
        return 0
    pid = recorded_head()
    if pid is None:
        log.info(
            f"the head recorded in {pid_file} is no longer running (its pid may now "
            "be another process's, which is left alone); record removed"
        )
    else:
        stop_node(pid)
        log.info(f"stopped the Ray head (pid {pid})")
    pid_file.unlink(missing_ok=True)
    (HEAD_DIR / "address").unlink(missing_ok=True)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down"):
        raise ConfigError(f"command={argv[0] if argv else None!r}; allowed: up, down")
    return up(argv[1:]) if argv[0] == "up" else down()


if __name__ == "__main__":
    run_cli(main)
