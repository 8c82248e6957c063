"""ray.init, the cluster address, and the resource check, in one place."""

from __future__ import annotations

import os

import ray

from trainer.config import ConfigError, ScalingSpec


def init_ray(address: str | None = None) -> dict:
    """Connect to RAY_ADDRESS (or ``address``) if set, else start a local cluster.
    Returns the cluster's total resources."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        # The dashboard stays on (bound to 127.0.0.1 by default): Ray Train's controller
        # and the state API used to find worker processes need it.
        ray.init(address=address, logging_level="WARNING")
    return ray.cluster_resources()


def check_resources(scaling: ScalingSpec, resources: dict) -> None:
    """Refuse, before any worker starts, a job the cluster can never place."""
    cpus = resources.get("CPU", 0)
    need_cpus = scaling.num_workers * scaling.cpus_per_worker
    if need_cpus > cpus:
        raise ConfigError(
            f"scaling.num_workers={scaling.num_workers} x scaling.cpus_per_worker="
            f"{scaling.cpus_per_worker} needs {need_cpus} CPUs; allowed: at most the "
            f"cluster's {cpus:g} CPUs"
        )
    if scaling.use_gpu:
        gpus = resources.get("GPU", 0)
        if scaling.num_workers > gpus:
            raise ConfigError(
                f"scaling.num_workers={scaling.num_workers} needs {scaling.num_workers} GPUs; "
                f"allowed: at most the cluster's {gpus:g} GPUs"
            )
