"""The job registry (cluster/jobs.py) is the one list: every job's module exists and its config
composes against its schema, and `make submit`, the job entry, Hydra's ConfigStore and
`make help` all read it."""

from __future__ import annotations

import ast
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from image_contents import module_path

from cluster import jobs, schema
from cluster.jobs import JOBS, OTHER_CONFIGS, config_schemas, entry_modules, load_schema
from cluster.ops import job_entry, submit

REPO_ROOT = Path(__file__).resolve().parents[2]
# conf/finetune.yaml and conf/dpo.yaml name no base model: the job finds the newest export.
BASE_MODEL = ["model.name_or_path=some/export"]


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_has_its_module_and_a_config_that_composes(name):
    job = JOBS[name]
    assert job.name == name and job.description and "\n" not in job.description
    path = module_path(job.module)
    assert path is not None and path.is_file(), job.module
    assert (schema.CONF_DIR / f"{job.config}.yaml").is_file(), job.config
    cfg = schema.load_config(job.config, BASE_MODEL if job.finds_base_model else [])
    assert isinstance(cfg, load_schema(job.schema))
    if job.finds_base_model:
        assert schema.compose_config(job.config, []).model.name_or_path is None


def test_hydra_registers_the_registrys_schemas(monkeypatch):
    assert set(config_schemas()) == {job.config for job in JOBS.values()} | set(OTHER_CONFIGS)
    assert schema.SCHEMAS == {name: load_schema(path) for name, path in config_schemas().items()}
    # Two jobs composing one config must agree on its schema.
    odd = dataclasses.replace(JOBS["prepare"], schema="schemas.jobs:EvalJobConfig")
    monkeypatch.setattr(jobs, "JOBS", {**JOBS, "prepare": odd})
    with pytest.raises(ValueError, match="conf/train.yaml has two schemas"):
        config_schemas()


def test_submit_knows_every_job_and_checks_dpo():
    assert submit.available_jobs() == list(JOBS)
    assert submit.check_job("dpo") == ("cluster.dpo", "dpo")


def test_the_job_entry_starts_every_registered_module_and_nothing_else(monkeypatch):
    started = []
    monkeypatch.setattr(job_entry, "missing_modules", lambda: [])
    monkeypatch.setattr(job_entry.os, "execv", lambda exe, argv: started.append(argv[1:]))
    for module in entry_modules():
        job_entry.main([module, "seed=1"])
    assert started == [["-m", module, "seed=1"] for module in entry_modules()]
    assert job_entry.main(["cluster.serve"]) == 2  # a module, but no job's


def test_the_job_entry_and_the_registry_need_only_the_standard_library():
    # What a bare interpreter does on the cluster: no site-packages at all (-S).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "cluster.ops.job_entry", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert ", ".join(entry_modules()) in proc.stdout
    for path in ("cluster/jobs.py", "cluster/ops/job_entry.py"):
        tree = ast.parse((REPO_ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                for name in names or [node.module]:
                    top = name.split(".")[0]
                    assert top in sys.stdlib_module_names or name == "cluster.jobs", (path, name)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_job():
    proc = subprocess.run(
        ["make", "--no-print-directory", "help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    for job in JOBS.values():
        line = next(line for line in proc.stdout.splitlines() if f"JOB={job.name} " in line)
        assert line.split() == ["make", "submit", f"JOB={job.name}", *job.description.split()]
    assert "make submit JOB=dpo " in proc.stdout
