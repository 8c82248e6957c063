"""Ray Jobs client: submit a zeroray job to a Ray cluster and follow it; status, logs, stop.

python -m cluster.ops.submit JOB [overrides ...] [--address URL] [--no-follow]
python -m cluster.ops.submit --status ID | --logs ID | --stop ID | --cluster-status

JOB (one of cluster/jobs.py) runs as `python -m <its module> overrides...` on the cluster,
in a copy of this checkout shipped as the job's working_dir (conf/submit.yaml lists what is
left out). The address is --address, else RAY_API_SERVER_ADDRESS / RAY_ADDRESS, else
conf/submit.yaml.
Following a job exits with the job's own exit code, so a failed job fails the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

import yaml

from cluster.cli import run_cli
from cluster.jobs import JOBS
from cluster.runs.storage import store_env
from console import log
from schemas.fields import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBMIT_CONFIG = REPO_ROOT / "conf" / "submit.yaml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class SubmitConfig:
    address: str = "http://127.0.0.1:8265"
    excludes: list[str] = field(default_factory=list)
    pip: bool = False
    entrypoint_num_cpus: float = 0
    env_vars: dict[str, str] = field(default_factory=dict)
    allow_plain_http_token: bool = False


def load_submit_config(path: Path = SUBMIT_CONFIG) -> SubmitConfig:
    data = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in fields(SubmitConfig)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown key in {path}; allowed keys: {', '.join(known)}")
    return SubmitConfig(**data)


def available_jobs() -> list[str]:
    """The registry's jobs (cluster/jobs.py) whose module this checkout has."""
    return [name for name, job in JOBS.items() if _module_file(job.module).is_file()]


def _module_file(module: str) -> Path:
    return REPO_ROOT / (module.replace(".", "/") + ".py")


def check_job(job: str) -> tuple[str, str]:
    allowed = ", ".join(available_jobs())
    if job not in JOBS:
        raise ConfigError(f"JOB={job!r} is not a known job; allowed: {allowed}")
    module, config_name = JOBS[job].module, JOBS[job].config
    if job not in available_jobs():
        raise ConfigError(
            f"JOB={job!r} has no entry point in this checkout yet "
            f"({_module_file(module).relative_to(REPO_ROOT)}); allowed: {allowed}"
        )
    return module, config_name


def resolve_address(flag: str | None, cfg: SubmitConfig) -> str:
    return (
        flag
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or os.environ.get("RAY_ADDRESS")
        or cfg.address
    )


def is_local(address: str) -> bool:
    return (urlparse(address if "://" in address else f"http://{address}").hostname or "") in (
        LOCAL_HOSTS
    )


def job_overrides(job: str, overrides: list[str], address: str) -> list[str]:
    """Check the overrides here, before anything is uploaded, and make the job's output and
    cache directories mean the same on the cluster as they do here."""
    module, config_name = check_job(job)
    from cluster.runs.storage import is_uri
    from cluster.schema import load_config

    checked = overrides
    if JOBS[job].finds_base_model and not any(o.startswith("model.name_or_path=") for o in checked):
        # The export to start from (the newest) is looked up by the job, on the cluster's storage.
        checked = [*overrides, "model.name_or_path=found-by-the-job"]
    cfg = load_config(config_name, checked)
    # The job runs in a temporary copy of this checkout: a relative path there vanishes
    # with the copy. On this machine's own cluster, anchor it here; elsewhere, refuse it.
    for key in ("output_dir", "cache_dir", "prepared_dir"):
        value = getattr(cfg, key, None)
        if value is None or is_uri(value) or Path(value).is_absolute():
            continue
        if not is_local(address):
            raise ConfigError(
                f"{key}={value!r} is relative, so on the cluster it would land in the job's "
                "temporary working directory; allowed: an absolute path on storage every "
                "node mounts, or a storage URI (s3://, gs://) for output_dir and prepared_dir"
            )
        overrides = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
        overrides.append(f"{key}={Path(value).expanduser().resolve()}")
    return overrides


def build_runtime_env(cfg: SubmitConfig, root: Path = REPO_ROOT) -> dict:
    env: dict = {"working_dir": str(root), "excludes": list(cfg.excludes)}
    # The object store's settings (endpoint, region, profile; never its keys: Ray logs
    # runtime_env values) as this machine has them, then the config's own.
    env_vars = store_env() | {k: str(v) for k, v in cfg.env_vars.items()}
    if env_vars:
        env["env_vars"] = env_vars
    if cfg.pip:
        env["pip"] = project_dependencies(root / "pyproject.toml")
    return env


def project_dependencies(pyproject: Path) -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def auth_headers() -> dict:
    """Ray's token authentication (on by default in 2.60): the token a local `ray start`
    wrote, or the one a remote cluster's admin handed out (RAY_AUTH_TOKEN)."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_token_transport(address: str, allow_plain_http: bool) -> None:
    """The Ray token is a key to run code on the cluster: never in clear text over a network."""
    scheme = urlparse(address if "://" in address else f"http://{address}").scheme
    if auth_headers() and scheme == "http" and not is_local(address) and not allow_plain_http:
        raise ConfigError(
            f"address={address!r}: plain http would send the Ray token in clear text; "
            "allowed: an https:// address (a TLS proxy in front of the dashboard), a tunnel "
            "to a loopback address (ssh -L 8265:localhost:8265 head, then "
            "http://127.0.0.1:8265), or allow_plain_http_token: true in conf/submit.yaml on "
            "a network you trust"
        )


@contextmanager
def _without_env(*names: str):
    # JobSubmissionClient lets RAY_ADDRESS override its address argument; the address this
    # module resolved (flag first) must win.
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        with _without_env("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            return JobSubmissionClient(address, headers=auth_headers())
    except Exception as e:  # requests' ConnectionError, Ray's AuthenticationError, ...
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"address={address!r}: no Ray cluster answers there ({why}); allowed: the "
            "dashboard URL of a running cluster, e.g. http://127.0.0.1:8265 after "
            "`make cluster-up`"
        ) from None


def job_info(client, job_id: str, address: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:
        raise ConfigError(
            f"ID={job_id!r}: {str(e).strip().splitlines()[0]}; allowed: a submission id "
            "printed by `make submit` (`make cluster-status` lists recent ones)"
        ) from None


def follow(client, job_id: str) -> None:
    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())


def exit_code(info) -> int:
    if info.status == "SUCCEEDED":
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if isinstance(code, int) and code > 0 else 1


def wait_terminal(client, job_id: str, address: str, timeout_s: float = 60):
    # The log stream can close a moment before the job's status is final.
    deadline = time.monotonic() + timeout_s
    info = job_info(client, job_id, address)
    while info.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        info = job_info(client, job_id, address)
    return info


def submit(job: str, overrides: list[str], address: str, cfg: SubmitConfig, wait: bool) -> int:
    module, _ = check_job(job)
    overrides = job_overrides(job, overrides, address)
    client = connect(address)
    # python3, not the module itself: job_entry checks the cluster's interpreter first
    # (cluster/ops/job_entry.py) and says in one line what is missing, or switches to Ray's.
    entrypoint = " ".join(
        ["python3", "-m", "cluster.ops.job_entry", module, *map(shlex.quote, overrides)]
    )
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env=build_runtime_env(cfg),
        entrypoint_num_cpus=cfg.entrypoint_num_cpus,
        metadata={"zeroray_job": job},
    )
    log.info(f"submitted {job_id}: {entrypoint}")
    log.info(f"dashboard: {address.rstrip('/')}/#/jobs/{job_id}")
    if not wait:
        log.info(f"follow it: make job-logs ID={job_id}; stop: make job-stop ID={job_id}")
        return 0
    try:
        follow(client, job_id)
    except KeyboardInterrupt:
        log.info(f"stopped following; {job_id} keeps running (make job-stop ID={job_id})")
        return 130
    info = wait_terminal(client, job_id, address)
    log.info(f"{job_id} {info.status}" + (f": {info.message}" if info.message else ""))
    return exit_code(info)


def status(job_id: str, address: str) -> int:
    info = job_info(connect(address), job_id, address)
    code = getattr(info, "driver_exit_code", None)
    print(f"{job_id}: {info.status}" + (f" (exit code {code})" if code is not None else ""))
    print(f"entrypoint: {info.entrypoint}")
    return 1 if info.status in ("FAILED", "STOPPED") else 0


def logs(job_id: str, address: str) -> int:
    client = connect(address)
    job_info(client, job_id, address)  # an unknown id: one line, not a traceback
    print(client.get_job_logs(job_id), end="")
    return 0


def stop(job_id: str, address: str) -> int:
    client = connect(address)
    job_info(client, job_id, address)
    stopped = client.stop_job(job_id)
    print(f"{job_id}: {'stop requested' if stopped else 'already finished'}")
    return 0


def cluster_status(address: str) -> int:
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = connect(address)  # one-line error if nothing answers
    state = StateApiClient(address, headers=auth_headers())
    nodes = state.list(
        StateResource.NODES, options=ListApiOptions(detail=True), raise_on_missing_output=False
    )
    alive = [n for n in nodes if n.state == "ALIVE"]
    print(f"cluster {address}: {len(alive)} node(s) alive")
    for n in alive:
        res = n.resources_total or {}
        gpus = f", {res['GPU']:g} GPU" if res.get("GPU") else ""
        role = "head" if n.is_head_node else "worker"
        print(f"  {n.node_id[:12]}  {n.node_ip:<15} {role:<6}  {res.get('CPU', 0):g} CPU{gpus}")
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    print(f"jobs: {len(jobs)}")
    for j in jobs[-10:]:
        print(f"  {j.submission_id or j.job_id}  {j.status:<9} {j.entrypoint}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, like every entry point
        usage = " ".join(self.format_usage().split()[1:])
        raise ConfigError(f"{message}; usage: {usage}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m cluster.ops.submit", description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", help=f"one of: {', '.join(JOBS)}")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the job")
    parser.add_argument("--address", help="Jobs API URL (default: RAY_ADDRESS, conf/submit.yaml)")
    parser.add_argument("--no-follow", action="store_true", help="print the id and return")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", metavar="ID")
    action.add_argument("--logs", metavar="ID")
    action.add_argument("--stop", metavar="ID")
    action.add_argument("--cluster-status", action="store_true")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    cfg = load_submit_config()
    address = resolve_address(args.address, cfg)
    check_token_transport(address, cfg.allow_plain_http_token)
    for name, command in (("status", status), ("logs", logs), ("stop", stop)):
        job_id = getattr(args, name)
        if job_id is not None:
            if not job_id.strip():
                raise ConfigError(
                    f"ID is empty; allowed: a submission id, e.g. make job-{name} ID=..."
                )
            return command(job_id, address)
    if args.cluster_status:
        return cluster_status(address)
    if not args.job:
        raise ConfigError(f"JOB is missing; allowed: {', '.join(available_jobs())}")
    return submit(args.job, args.overrides, address, cfg, wait=not args.no_follow)


if __name__ == "__main__":
    run_cli(main)
