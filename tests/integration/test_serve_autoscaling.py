"""Autoscaling on a local Ray cluster with `make serve`'s ingress: sustained load through the
port users call takes the app from 1 to 2 replicas, the ingress sends requests to both, and
idleness brings it back to 1 (delays shortened for the test)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
from ray import serve
from serve_apps import free_port

from cluster.serve import replica_urls
from schemas.serving import AutoscalingConfig, ServeConfig
from serve.deployment import build_app


def _running_replicas(app: str) -> int:
    status = serve.status().applications[app].deployments["LLMServer"]
    return status.replica_states.get("RUNNING", 0)


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _both_replicas_busy(app: str, window_s: float = 10) -> bool:
    """Whether each replica, asked at its own URL, has a request in flight at some moment
    of the window: one the ingress sends nothing to never has."""
    urls = replica_urls(app, "127.0.0.1")
    seen = {url: False for url in urls}
    deadline = time.monotonic() + window_s
    while len(urls) == 2 and not all(seen.values()) and time.monotonic() < deadline:
        for url in urls:
            health = httpx.get(f"{url}/{app}/health", timeout=10).json()
            seen[url] = seen[url] or health["in_flight"] > 0
        time.sleep(0.05)
    return len(urls) == 2 and all(seen.values())


def test_scales_up_under_load_and_back_down(ray_cluster, tiny_export):
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = ServeConfig(
        model_dir=str(tiny_export),
        num_cpus=0.25,
        max_batch_size=4,
        autoscaling=AutoscalingConfig(
            min_replicas=1,
            max_replicas=2,
            target_ongoing_requests=2,
            upscale_delay_s=1,
            downscale_delay_s=4,
            metrics_interval_s=0.5,
            look_back_period_s=2,
        ),
    )
    serve.run(build_app(args), name="auto", route_prefix="/auto")
    url = f"http://127.0.0.1:{port}/auto/v1/completions"
    try:
        assert _running_replicas("auto") == 1
        stop = threading.Event()
        statuses: list[int] = []

        async def load():
            async with httpx.AsyncClient(timeout=60) as http:

                async def worker():
                    while not stop.is_set():
                        r = await http.post(
                            url, json={"model": "tiny-gpt2", "prompt": "The", "max_tokens": 16}
                        )
                        statuses.append(r.status_code)

                await asyncio.gather(*(worker() for _ in range(12)))

        loader = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
        loader.start()
        try:
            assert _wait_for(lambda: _running_replicas("auto") == 2, 90), "never scaled up"
            # The ingress learns of the new replica within seconds; then both get requests.
            assert _wait_for(lambda: _both_replicas_busy("auto"), 30), "one replica got none"
        finally:
            stop.set()
            loader.join(timeout=60)
        assert statuses and all(s == 200 for s in statuses), set(statuses)
        assert _wait_for(lambda: _running_replicas("auto") == 1, 90), "never scaled down"
    finally:
        serve.shutdown()
