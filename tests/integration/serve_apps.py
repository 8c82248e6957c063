"""Deploying test apps on the local Ray cluster's Serve: a free port and a health wait."""

from __future__ import annotations

import socket
import time

import httpx
from ray import serve

from schemas.serving import AutoscalingConfig
from serve.deployment import build_app


def small_app(model_dir) -> dict:
    """ServeConfig settings of a one-replica test app that shares the 2-core machine."""
    return dict(
        model_dir=str(model_dir),
        num_cpus=0.25,
        max_batch_size=8,
        autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=1),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def deploy(apps: dict, host: str = "127.0.0.1") -> str:
    """Each ServeConfig under its own route prefix (/<name>), Serve listening on ``host``;
    returns the root URL (on loopback)."""
    port = free_port()
    serve.start(http_options={"host": host, "port": port})
    root = f"http://127.0.0.1:{port}"
    for name, args in apps.items():
        serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    for name in apps:
        wait_healthy(f"{root}/{name}")
    return root
