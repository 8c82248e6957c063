"""`python -m cluster.ops.submit` before any cluster is involved: bad input is one line and exit
code 2, the job's overrides are checked here, and the runtime environment ships this
checkout without its outputs. (Submitting and following real jobs: tests/integration/
two_nodes/test_cluster_jobs.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.ops import submit
from schemas.fields import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _toml_loads(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads(text)


def run_submit(*args: str) -> subprocess.CompletedProcess:
    drop = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        [sys.executable, "-m", "cluster.ops.submit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A localhost port nothing listens on: a real, refused connection."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unknown_job_name():
    line = assert_one_line_error(run_submit("pretrain"), "JOB='pretrain'", "train", "prepare")
    assert "not a known job" in line


def test_finetune_dpo_and_eval_jobs_check_their_own_configs_here(closed_port):
    assert set(submit.available_jobs()) == set(submit.JOBS)
    address = f"http://127.0.0.1:{closed_port}"
    proc = run_submit("finetune", "lora.rank=0", "--address", address)
    assert_one_line_error(proc, "lora.rank=0", "must be > 0")
    proc = run_submit("dpo", "dpo.beta=0", "--address", address)
    assert_one_line_error(proc, "dpo.beta=0", "must be > 0")
    proc = run_submit("eval", "eval.batch_size=0", "--address", address)
    assert_one_line_error(proc, "eval.batch_size=0", "must be > 0")
    # No base model named: valid here, the job finds the newest export on the cluster.
    for job in ("finetune", "dpo"):
        out = submit.job_overrides(job, ["output_dir=/abs/runs", "cache_dir=/abs/c"], address)
        assert out == ["output_dir=/abs/runs", "cache_dir=/abs/c"]


def test_unreachable_cluster_address(closed_port):
    address = f"http://127.0.0.1:{closed_port}"
    line = assert_one_line_error(
        run_submit("train", "trainer.max_steps=5", "--address", address), f"address='{address}'"
    )
    assert "make cluster-up" in line
    # The job-* commands go through the same connection check.
    assert_one_line_error(run_submit("--status", "raysubmit_x", "--address", address), "address=")


def test_bad_overrides_fail_here_before_the_cluster_is_contacted(closed_port):
    # The address is dead too: the override error must come first.
    proc = run_submit("train", "deepspeed.stage=5", "--address", f"http://127.0.0.1:{closed_port}")
    assert_one_line_error(proc, "deepspeed.stage=5", "one of 0, 1, 2, 3")


def test_missing_or_empty_arguments():
    assert_one_line_error(run_submit(), "JOB is missing", "allowed: train")
    assert_one_line_error(run_submit("--status", ""), "ID is empty")
    assert_one_line_error(run_submit("--status"), "--status: expected one argument")


def test_relative_output_dir_is_anchored_here_for_a_local_cluster(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = submit.job_overrides("train", ["output_dir=runs", "seed=1"], "http://127.0.0.1:8265")
    assert out == ["seed=1", f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]


def test_relative_output_dir_is_refused_for_a_remote_cluster():
    with pytest.raises(ConfigError, match=r"output_dir='runs' is relative"):
        submit.job_overrides("train", [], "http://10.0.0.5:8265")
    kept = ["output_dir=s3://bucket/runs", "cache_dir=/shared/cache"]
    assert submit.job_overrides("train", kept, "http://10.0.0.5:8265") == kept


def test_runtime_env_ships_this_checkout_without_outputs_or_environments():
    cfg = submit.load_submit_config()
    env = submit.build_runtime_env(cfg)
    assert env["working_dir"] == str(REPO_ROOT)
    for excluded in ("/runs/", "/cache/", ".venv/", ".git/"):
        assert excluded in env["excludes"]
    # Matched as Ray matches them: the root's runs/ stays home, the code in cluster/runs/
    # travels (an unanchored runs/ left it out of every job).
    from ray._private.thirdparty.pathspec import PathSpec

    spec = PathSpec.from_lines("gitwildmatch", env["excludes"])
    assert spec.match_file("runs/pretrain/a/metrics.jsonl")
    assert not spec.match_file("cluster/runs/resolve.py")
    assert "pip" not in env  # by default the image (deploy/Dockerfile) has the dependencies
    cfg.pip = True
    pinned = _toml_loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert submit.build_runtime_env(cfg)["pip"] == pinned
    assert any(d.startswith("ray[") for d in pinned)


def test_submit_config_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "submit.yaml"
    bad.write_text("adress: http://x:8265\n")
    with pytest.raises(ConfigError, match="adress: unknown key"):
        submit.load_submit_config(bad)


def test_address_precedence(monkeypatch):
    cfg = submit.SubmitConfig(address="http://from-config:8265")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert submit.resolve_address(None, cfg) == "http://from-config:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://from-env:8265")
    assert submit.resolve_address(None, cfg) == "http://from-env:8265"
    assert submit.resolve_address("http://flag:8265", cfg) == "http://flag:8265"


def test_auth_token_from_environment_or_file(tmp_path, monkeypatch):
    token_file = tmp_path / "auth_token"
    token_file.write_text("secret-from-file\n")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert submit.auth_headers() == {"Authorization": "Bearer secret-from-file"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret-from-env")
    assert submit.auth_headers() == {"Authorization": "Bearer secret-from-env"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    assert submit.auth_headers() == {}


def test_the_uploaded_package_holds_no_secrets_but_the_code(tmp_path):
    """Ray's own packaging of a working directory, with this project's excludes."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    project = tmp_path / "project"
    for name in (
        "trainer/loop.py",
        "conf/train.yaml",
        "runs/x/metrics.jsonl",
        ".env",
        ".env.local",
        "deploy/server.pem",
        "keys/id_rsa",
        "auth_token",
        "api.token",
        ".aws/credentials",
        "cache/data-1/tokenizer/tokenizer.json",
    ):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    excludes = submit.build_runtime_env(submit.load_submit_config(), project)["excludes"]
    package = tmp_path / "package.zip"
    create_package(str(project), package, include_gitignore=True, excludes=excludes)
    shipped = {n for n in zipfile.ZipFile(package).namelist() if not n.endswith("/")}
    assert shipped == {"trainer/loop.py", "conf/train.yaml"}


def test_the_ray_token_never_goes_over_plain_http_to_another_host(tmp_path):
    env = {"RAY_AUTH_TOKEN": "sekrit", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.ops.submit",
            "--status",
            "x",
            "--address",
            "http://10.1.2.3:8265",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
    )
    assert_one_line_error(proc, "address='http://10.1.2.3:8265'", "clear text", "https://")
    for address, allowed in [
        ("https://10.1.2.3:8265", False),
        ("http://127.0.0.1:8265", False),
        ("http://10.1.2.3:8265", True),
    ]:
        os.environ.update(env)
        try:
            submit.check_token_transport(address, allowed)  # no error
        finally:
            for key in env:
                os.environ.pop(key)


JOB_ENTRY = [sys.executable, "-m", "cluster.ops.job_entry"]
SYSTEM_PYTHON = "/usr/bin/python3"


def _lacks_the_project(python: str) -> bool:
    if not Path(python).is_file():
        return False
    probe = subprocess.run([python, "-c", "import omegaconf"], capture_output=True)
    return probe.returncode != 0


@pytest.mark.skipif(not _lacks_the_project(SYSTEM_PYTHON), reason="needs a bare system python3")
def test_a_job_on_a_bare_interpreter_runs_on_the_one_ray_runs_on(tmp_path):
    # The parent imports Ray, as the job supervisor does; the job's shell found a python3
    # without the project's dependencies.
    parent = (
        "import ray._raylet, subprocess, sys; sys.exit(subprocess.call("
        f"[{SYSTEM_PYTHON!r}, '-m', 'cluster.ops.job_entry', 'cluster.train', "
        "'model=no-such-model']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert f"{SYSTEM_PYTHON} lacks ray, hydra, omegaconf" in proc.stdout, proc.stdout
    assert "the interpreter this cluster's Ray runs on" in proc.stdout
    # It got as far as the real entry point, which checked the overrides.
    assert proc.returncode == 2 and "no-such-model" in proc.stderr, proc.stderr


def test_a_job_no_interpreter_can_run_ends_in_one_line(monkeypatch, capsys):
    from cluster.ops import job_entry

    monkeypatch.setattr(job_entry, "REQUIRED", ("omegaconf", "zeroray_no_such_module"))
    monkeypatch.setattr(job_entry, "rays_interpreters", lambda: [])
    assert job_entry.main(["cluster.train"]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert "lacks zeroray_no_such_module" in line and "make cluster-up" in line
    assert "pip: true" in line and "deploy/Dockerfile" in line
    assert job_entry.main(["rm -rf /"]) == 2
