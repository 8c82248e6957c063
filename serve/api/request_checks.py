"""Checks of a request that need no model: JSON shape and Unicode, the bearer key, and the
status every answer is counted under (serve/api/router.py applies them).

Also where a replica's bearer key comes from, and the rule that a replica reachable beyond
this machine never serves without one (it fails closed: the deployment fails to start). The
key arrives in the deployment's arguments (`make serve` puts the one it found there) or in
the replica's own environment variable ``api_key_env`` (a Kubernetes Secret on a
RayService). It is never logged: the messages below name the variable, not the value."""

from __future__ import annotations

import functools
import hmac
import os

from fastapi.exceptions import RequestValidationError

from schemas.fields import ConfigError
from schemas.serving import ServeConfig, is_loopback
from serve.api.errors import APIError

# JSON deeper than this is refused before validation walks it (no OpenAI field nests deeper
# than a few levels; json.loads itself would raise RecursionError near 1,000).
MAX_JSON_DEPTH = 32


def check_payload(payload: object) -> None:
    """Nesting within MAX_JSON_DEPTH and every string valid Unicode: JSON's \\ud800 escapes
    decode to lone surrogates, which no tokenizer can take and UTF-8 cannot encode."""
    stack = [(payload, 1, None)]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIError(400, f"request JSON nests deeper than {MAX_JSON_DEPTH} levels", where)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(
                    400, f"{where or 'a string'} holds invalid Unicode (a lone surrogate)", where
                ) from None
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, depth + 1, where or key))
                stack.append((item, depth + 1, where or key))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, where) for item in value)


def counted(route: str):
    """Counts every answer of a route in `zeroray_requests` by its real HTTP status (a
    stream counts 200 when it starts; a failure inside it is counted as stream_error)."""

    def wrap(method):
        @functools.wraps(method)
        async def counting(self, *args, **kwargs):
            try:
                response = await method(self, *args, **kwargs)
            except APIError as e:
                self._count(route, e.status)
                raise
            except RequestValidationError:
                self._count(route, 400)
                raise
            except Exception:
                self._count(route, 500)
                raise
            self._count(route, 200)
            return response

        return counting

    return wrap


def bearer_matches(header: str | None, key: str) -> bool:
    """`Authorization: Bearer <key>`, the scheme in any case (RFC 7235), the key compared in
    constant time so that response timing reveals nothing of it."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


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
