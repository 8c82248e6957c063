"""The Serve deployment of a replica and `build_app(args)`: the entry for `serve run` /
`serve deploy` (``import_path: serve.deployment:build_app``, ``args`` a dict) and for
`make serve` (cluster/serve.py, typed args)."""

from __future__ import annotations

import os

from ray import serve

from schemas.fields import ConfigError
from schemas.serving import ServeConfig
from serve.app import LLMServer


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
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        raise ConfigError(
            f"model_dir={args.model_dir!r} is not a Hugging Face export "
            "(no config.json); allowed: an export directory such as "
            "runs/<experiment>/<run>/export"
        )
    return LLMServer.options(**deployment_options(args)).bind(args)
