"""ray.init, the cluster address, and the resource check, in one place."""

from __future__ import annotations

import os

import ray

from console import log
from schemas.fields import ConfigError
from schemas.scaling import ScalingConfig


def init_ray(address: str | None = None) -> dict:
    """Connect to RAY_ADDRESS (or ``address``) if set, else to the head `make cluster-up`
    started from this checkout if it runs (no Ray start: 8-10 s of a first step), else
    start a local cluster. Returns the most resources the cluster can have (see
    ``cluster_capacity``)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        found = {}
        if address is None:
            from cluster.ops.local_head import head_temp_dir

            temp_dir = head_temp_dir()
            if temp_dir is not None:
                # Found through its temp dir, Ray treats it as the local cluster it is: it
                # turns on the token authentication the head runs with (an explicit address
                # would not), with the token the head wrote (~/.ray/auth_token).
                found = {"_temp_dir": temp_dir}
                log.info(f"attaching to the Ray head `make cluster-up` started ({temp_dir})")
        # The dashboard stays on (bound to 127.0.0.1 by default): Ray Train's controller
        # and the state API used to find worker processes need it.
        # An object store's settings (endpoint, region, profile) reach every worker and
        # replica through the job's runtime environment; its secrets never do, as Ray logs
        # runtime_env values (cluster/runs/storage.py).
        from cluster.runs.storage import store_env, store_secrets_set

        env, secrets = store_env(), store_secrets_set()
        if address and secrets:
            log.warning(
                f"{', '.join(secrets)} stay on this machine (Ray would write them into its "
                "logs): the cluster's nodes need their own store credentials (an instance "
                "role, IRSA, a Kubernetes Secret, or a profile in AWS_SHARED_CREDENTIALS_FILE)"
            )
        # A submitted job's driver already runs in the job's runtime environment (`make
        # submit` puts the store settings there): naming a variable twice would be refused.
        in_a_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
        runtime_env = {"env_vars": env} if env and not in_a_job else None
        ray.init(address=address, logging_level="WARNING", runtime_env=runtime_env, **found)
    return cluster_capacity(ray.cluster_resources(), _autoscaler_max_resources())


def cluster_capacity(current: dict, autoscaler_max: dict | None) -> dict:
    """What a job may ask for: an autoscaling cluster (deploy/aws.yaml, KubeRay) starts
    with few nodes and adds GPU nodes on demand, so its limit is the autoscaler's maximum,
    not what is up now; without an autoscaler it is what is up now."""
    if not autoscaler_max:
        return dict(current)
    keys = set(current) | set(autoscaler_max)
    return {k: max(current.get(k, 0), autoscaler_max.get(k, 0)) for k in keys}


def _autoscaler_max_resources() -> dict | None:
    # The figure Ray Train's own worker-group check uses (ray.train.v2 WorkerGroup); it sits
    # behind a private API, so any failure to read it means "no autoscaler".
    try:
        from ray._private.state import state

        return state.get_max_resources_from_cluster_config()
    except Exception:
        return None


def check_resources(scaling: ScalingConfig, resources: dict) -> None:
    """Refuse, before any worker starts, a job the cluster can never place (an elastic run
    needs room for its minimum; it grows when nodes join)."""
    workers = scaling.min_workers
    cpus = resources.get("CPU", 0)
    need_cpus = workers * scaling.cpus_per_worker
    if need_cpus > cpus:
        raise ConfigError(
            f"scaling.num_workers={scaling.num_workers} x scaling.cpus_per_worker="
            f"{scaling.cpus_per_worker} needs {need_cpus} CPUs; allowed: at most the "
            f"cluster's {cpus:g} CPUs"
        )
    if scaling.use_gpu:
        gpus = resources.get("GPU", 0)
        if workers > gpus:
            raise ConfigError(
                f"scaling.num_workers={scaling.num_workers} needs {workers} GPUs; "
                f"allowed: at most the cluster's {gpus:g} GPUs"
            )
    if scaling.elastic:
        log.info(
            f"elastic: {scaling.min_workers} to {scaling.max_workers} workers; "
            f"the cluster has room for {_fits(scaling, resources)} now"
        )


def _fits(scaling: ScalingConfig, resources: dict) -> int:
    fits = int(resources.get("CPU", 0) // scaling.cpus_per_worker)
    if scaling.use_gpu:
        fits = min(fits, int(resources.get("GPU", 0)))
    return min(fits, scaling.max_workers)
