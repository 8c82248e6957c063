"""The LoRA adapters loaded at run time into one Serve app, shared by its replicas: a small
named Ray actor per app holding name -> path. The replica that loads or unloads an adapter
through the API writes it here; every replica reads it at its health checks
(serve/deployment.py) and takes it up (serve/adapters.py, ``Adapters.sync``).

Detached, so that it outlives any one replica (and a replica started later, by autoscaling,
finds the set); named by the app, so that redeploying the app keeps its run-time adapters.
"""

from __future__ import annotations

import ray

NAMESPACE = "zeroray-serve"


@ray.remote(num_cpus=0)
class AdapterRegistry:
    def __init__(self) -> None:
        self.adapters: dict[str, str] = {}

    def publish(self, name: str, path: str | None) -> None:
        if path is None:
            self.adapters.pop(name, None)
        else:
            self.adapters[name] = path

    def registered(self) -> dict[str, str]:
        return dict(self.adapters)


def app_registry(app_name: str):
    """The app's registry, started by the first replica that asks."""
    return AdapterRegistry.options(
        name=f"lora-adapters-{app_name}",
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
    ).remote()
