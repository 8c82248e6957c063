"""The integration tier's local Ray cluster, started with `make serve`'s ingress settings (the
defaults of ServeJobConfig) in its environment: Serve's controller, ingress and replicas read
them once, at start-up, so every Serve test on this cluster runs behind the ingress users get,
and no module has to restart the cluster for it (each restart cost 5-7 s)."""

from __future__ import annotations

import os


def serve_ingress_env() -> dict[str, str]:
    from serve_apps import free_port

    from cluster.serve import ingress_env
    from schemas.jobs import ServeJobConfig

    default = ServeJobConfig()
    env = ingress_env(default.ingress, default.throughput_optimized)
    # A replica leaving waits 1 s, not 30, for load balancers elsewhere to forget it (there
    # are none here); HAProxy's stats and metrics ports (8404, 9101 by default) are free ones,
    # so that test sessions beside this one do not collide. A replica whose constructor
    # fails is tried once, not three times, before its app is DEPLOY_FAILED: the apps the
    # tests make fail (test_serve_key.py) fail the same way on every try, and each try
    # starts a replica process (torch, transformers) for nothing.
    return env | {
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }


def start() -> None:
    """ray.init of a 2-CPU local cluster whose processes see serve_ingress_env(); this
    process's own environment is left as it was."""
    import ray

    env = serve_ingress_env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, logging_level="WARNING")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
