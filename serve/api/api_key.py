"""Where a replica's bearer key comes from, and the rule that a replica reachable beyond this
machine never serves without one (it fails closed: the deployment fails to start). No Ray
here: the deployment reads the host Serve listens on and calls `require_key`.

The key arrives in the deployment's arguments (`make serve` puts the one it found there) or
in the replica's own environment variable ``api_key_env`` (a Kubernetes Secret on a
RayService). It is never logged: the messages below name the variable, not the value.
"""

from __future__ import annotations

import os

from schemas.fields import ConfigError
from schemas.serving import ServeConfig, is_loopback


def configured_key(config: ServeConfig) -> str | None:
    """The key from the deployment's arguments, else from the replica's environment."""
    return config.api_key or os.environ.get(config.api_key_env) or None


def require_key(config: ServeConfig, host: str | None) -> str | None:
    """The replica's key; ConfigError when Serve listens beyond loopback (``host``; None when
    it could not be read, taken as beyond) with no key and no explicit opt-out."""
    key = configured_key(config)
    if key or is_loopback(host) or config.allow_unauthenticated:
        return key
    raise ConfigError(
        f"this replica listens on host={host or 'unknown'!r}, beyond loopback, and has no API "
        f"key: refusing to start; allowed: the key in the replicas' ${config.api_key_env} "
        "(serve.api_key_env; a Kubernetes Secret on a RayService), serve.api_key in the "
        "deployment's args, a loopback host, or allow_unauthenticated=true"
    )
