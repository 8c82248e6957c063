"""The key fails closed on a real cluster: a replica whose Serve listens on 0.0.0.0 with no
key refuses to start (from `serve.run` and from the config file `make serve-config` writes,
deployed as `serve deploy` deploys it), and `make serve` against a head without Ray token
auth ends in one line. The wiring without Ray is in tests/unit/test_serve_launch.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray import serve
from serve_apps import free_port, small_app

from cluster.ops.local_head import wait_for_jobs_api
from cluster.schema import load_config
from cluster.serve import resolve_checkpoint, serve_config_file
from schemas.serving import ServeConfig
from serve.deployment import build_app

REPO_ROOT = Path(__file__).resolve().parents[2]
NOBODY_SETS = "ZERORAY_TEST_KEY_NOBODY_SETS"  # so no developer's own key can leak in


@pytest.fixture(scope="module")
def open_serve(ray_cluster):
    """Serve listening on every interface, as the RayService's does."""
    serve.start(http_options={"host": "0.0.0.0", "port": free_port()})
    yield
    serve.shutdown()


def test_a_replica_on_0000_without_a_key_fails_its_deployment(open_serve, tiny_export):
    args = ServeConfig(**small_app(tiny_export), api_key_env=NOBODY_SETS)
    with pytest.raises(RuntimeError, match="Deploying application nokey failed"):
        serve.run(build_app(args), name="nokey", route_prefix="/nokey")
    message = _messages(serve.status().applications["nokey"])
    assert "refusing to start" in message and f"${NOBODY_SETS}" in message


def _messages(app_status) -> str:
    """The app's status message and its deployments' (where a replica's error lands)."""
    return " ".join([app_status.message, *(d.message for d in app_status.deployments.values())])


def test_the_written_config_for_0000_fails_closed_when_deployed_without_a_key(
    open_serve, tiny_export
):
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    cfg = load_config(
        "serve",
        [f"checkpoint={tiny_export}", "host=0.0.0.0", f"serve.api_key_env={NOBODY_SETS}"],
    )
    cfg.serve.model_dir = resolve_checkpoint(cfg)
    written = serve_config_file(cfg)
    (app,) = written["applications"]
    app["args"].update(num_cpus=0.25, autoscaling={"min_replicas": 1, "max_replicas": 1})
    app.update(name="written", route_prefix="/written")
    # What `serve deploy` hands the controller (the dashboard's REST API does the same).
    _get_global_client().deploy_apps(ServeDeploySchema(applications=[app]))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = serve.status().applications.get("written")
        if status is not None and status.status in ("DEPLOY_FAILED", "RUNNING"):
            break
        time.sleep(1)
    assert status.status == "DEPLOY_FAILED"
    assert "refusing to start" in _messages(status)


def test_make_serve_on_0000_to_a_head_without_token_auth_is_one_line(tiny_export):
    """`make serve` is `python -m cluster.serve`, here against a head started with
    RAY_AUTH_MODE=disabled (its own short temp dir: Ray's socket paths are limited)."""
    temp = tempfile.mkdtemp(prefix="zr-")
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--disable-usage-stats", f"--port={port}"]
        + [f"--dashboard-port={dashboard}", "--num-cpus=0", f"--temp-dir={temp}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        driver_env = {
            **os.environ,
            "RAY_ADDRESS": f"127.0.0.1:{port}",
            "ZERORAY_API_KEY": "k",
            "PYTHONPATH": str(REPO_ROOT),
        }
        driver_env.pop("RAY_AUTH_MODE", None)
        out = None
        # The refusal reads the head's auth mode from its dashboard: wait until it answers.
        wait_for_jobs_api(f"http://127.0.0.1:{dashboard}", head)
        for attempt in range(4):  # the head may still be starting behind its dashboard
            time.sleep(3 * attempt)
            out = subprocess.run(
                [sys.executable, "-m", "cluster.serve", f"checkpoint={tiny_export}"]
                + ["host=0.0.0.0", "blocking=false"],
                env=driver_env,
                capture_output=True,
                text=True,
                timeout=120,
                cwd=REPO_ROOT,
            )
            if "cannot attach" not in out.stderr and "unreadable" not in out.stderr:
                break
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.strip().splitlines() == [
            "error: host='0.0.0.0' serves beyond this machine, but the Ray head's token "
            "authentication is disabled; allowed: a head started with RAY_AUTH_MODE=token "
            "(make cluster-up does), or host=127.0.0.1"
        ]
    finally:
        # A throwaway head: killed, not drained (a drain takes about 30 s here).
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
