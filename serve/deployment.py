"""The Serve deployment of a replica and `build_app(args)`: the entry for `serve run` /
`serve deploy` (``import_path: serve.deployment:build_app``, ``args`` a dict) and for
`make serve` (cluster/serve.py, typed args).

The deployment only wires the layers together: it loads the Generator, starts the
Scheduler, fills the API's metrics with Ray Serve metrics, and serves the FastAPI app that
serve/api/router.py builds over them. Everything a request meets is in serve/api/, without Ray.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve
from ray.exceptions import TaskCancelledError
from ray.serve import metrics

from rundir import layout
from rundir.node_cache import fetch_export
from rundir.store import is_uri
from schemas.fields import ConfigError
from schemas.serving import ServeConfig
from serve.adapter_registry import app_registry
from serve.adapters import Adapters
from serve.api.metrics import ServingMetrics
from serve.api.request_checks import require_key
from serve.api.router import build_openai_app
from serve.generator import Generator
from serve.sampling import SamplingParams
from serve.scheduler import Scheduler

logger = logging.getLogger("ray.serve")


def ray_serve_metrics() -> ServingMetrics:
    """The API's metrics as Ray Serve metrics, exported with the replica's own."""
    requests = metrics.Counter(
        "zeroray_requests", "requests by route and status", tag_keys=("route", "status")
    )
    tokens = metrics.Counter("zeroray_generated_tokens", "completion tokens generated")
    ttft = metrics.Histogram(
        "zeroray_time_to_first_token_s",
        "seconds to first token",
        boundaries=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
    )
    in_flight = metrics.Gauge("zeroray_in_flight", "prompts admitted and not finished")
    return ServingMetrics(
        count_request=lambda route, status: requests.inc(tags={"route": route, "status": status}),
        observe_time_to_first_token_s=ttft.observe,
        count_generated_tokens=tokens.inc,
        set_in_flight=in_flight.set,
    )


@serve.deployment(name="LLMServer")
@serve.ingress()  # the app is built per replica, by __serve_build_asgi_app__ below
class LLMServer:
    def __init__(self, args: ServeConfig):
        host = serve_http_host()
        try:
            require_key(args, host)  # before the model loads: fail closed, and fast
        except ConfigError as e:
            logger.error("%s", e)  # one line; the deployment then fails with it
            raise
        self.args = args
        model_dir = args.model_dir
        if is_uri(model_dir):  # fetched onto this replica's node, once per node
            model_dir = str(fetch_export(model_dir))
        self.generator = Generator(model_dir, dtype=args.dtype, max_context=args.max_context)
        self.scheduler = Scheduler.from_config(self.generator, args)
        self.metrics = ray_serve_metrics()
        base_id = args.model_name or self.generator.model_name
        self.adapters = Adapters(self.generator, args.lora, base_id)
        self.adapters.in_use = self.scheduler.adapters_in_use
        # Run-time loads reach the app's other replicas through its registry (at their
        # health checks, every health_check_period_s); found when first needed.
        self._registry = None
        self.adapters.publish = lambda name, path: self.registry().publish.remote(name, path)

    def registry(self):
        if self._registry is None:
            self._registry = app_registry(serve.get_replica_context().app_name)
        return self._registry

    def __serve_build_asgi_app__(self) -> FastAPI:
        # TaskCancelledError is Serve's way of telling a streaming response that its client
        # disconnected: answered 499 (serve/api/errors.py).
        return build_openai_app(
            self.args,
            self.generator,
            self.scheduler,
            self.metrics,
            client_gone=(TaskCancelledError,),
            adapters=self.adapters,
        )

    async def check_health(self) -> None:
        """A real one-token generation: a replica whose model cannot generate is unhealthy."""
        ids = self.generator.encode("ok") or [0]
        # On the decode thread, between rounds: never beside a load changing the model.
        generate = self.generator.generate
        await self.scheduler.run_between_rounds(generate, [ids], [SamplingParams(max_tokens=1)])
        registered = await self.registry().registered.remote()
        if registered != self.adapters.registered:
            await self.scheduler.run_between_rounds(self.adapters.sync, registered)


def serve_http_host() -> str | None:
    """The host Serve's proxy and a replica's own port listen on (Serve's http_options, as
    its controller holds them); None when it cannot be read, which counts as beyond
    loopback. A private Ray API, hence the broad except: failing to read it fails closed."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:
        return None


def deployment_options(args: ServeConfig) -> dict:
    auto = args.autoscaling
    return {
        # Serve admits a little more than our own limit so that the replica, not Serve's
        # router, answers overload, with an OpenAI-shaped 429 and Retry-After.
        "max_ongoing_requests": args.max_ongoing_requests + args.max_queued_requests + 1,
        "autoscaling_config": {
            "min_replicas": auto.min_replicas,
            "max_replicas": auto.max_replicas,
            "initial_replicas": max(1, auto.min_replicas),
            "target_ongoing_requests": auto.target_ongoing_requests,
            "upscale_delay_s": auto.upscale_delay_s,
            "downscale_delay_s": auto.downscale_delay_s,
            "metrics_interval_s": auto.metrics_interval_s,
            "look_back_period_s": auto.look_back_period_s,
        },
        "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        "health_check_period_s": 10.0,
        # The zeroray_requests metric counts every request by status either way.
        "logging_config": {"enable_access_log": args.access_log},
    }


def build_app(args: ServeConfig | dict) -> serve.Application:
    if isinstance(args, dict):
        args = ServeConfig.from_dict(args)
    if not layout.is_export(args.model_dir):
        raise ConfigError(
            f"model_dir={args.model_dir!r} is not a Hugging Face export "
            "(no config.json); allowed: an export directory such as "
            "runs/<experiment>/<run>/export"
        )
    for name, path in args.lora.adapters.items():
        if not layout.is_adapter(path):
            raise ConfigError(
                f"serve.lora.adapters.{name}={path!r} is not a peft adapter directory (no "
                "adapter_config.json); allowed: the export of a run with "
                "lora.merge_on_export=false, or its adapter/ folder"
            )
    return LLMServer.options(**deployment_options(args)).bind(args)
