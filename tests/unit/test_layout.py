"""The folder says where a line runs: each package imports only what its runtime allows.

Read from the source with ast (imports inside functions count too), so a violation fails
here without any of the packages being imported.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = {
    "cluster", "trainer", "serve", "dataprep", "evaluation", "planner", "schemas", "rundir",
    "console", "bench", "tracking",
}  # fmt: skip

# package -> top-level modules it must never import, and why.
FORBIDDEN = {
    # Ray Train workers: no Hydra (config arrives typed), no driver code, no serving stack.
    "trainer": {"hydra", "omegaconf", "cluster", "serve", "evaluation", "dataprep", "bench"},
    # Serve replicas read only an export: no training stack, no driver code.
    "serve": {"trainer", "deepspeed", "hydra", "omegaconf", "cluster", "dataprep", "evaluation"},
    # Offline data work and evaluation tasks: no Hydra, no driver code, no DeepSpeed.
    "dataprep": {"hydra", "omegaconf", "cluster", "trainer", "evaluation", "deepspeed"},
    "evaluation": {"hydra", "omegaconf", "cluster", "deepspeed"},
    # The planner runs in the driver before anything starts: no Ray, no DeepSpeed.
    "planner": {"hydra", "omegaconf", "cluster", "serve", "evaluation", "deepspeed", "ray"},
    # Plain dataclasses every runtime unpickles: nothing heavy, nothing of the others.
    "schemas": {"hydra", "omegaconf", "cluster", "trainer", "serve", "dataprep", "evaluation"},
    # Tracking runs in the driver and in rank 0: no driver code, no training or serving stack.
    "tracking": {
        "hydra",
        "omegaconf",
        "cluster",
        "trainer",
        "serve",
        "dataprep",
        "evaluation",
        "deepspeed",
        "ray",
        "torch",
        "transformers",
    },  # fmt: skip
    # The run directory's contract: read by every runtime, so the standard library only.
    "rundir": {
        "hydra",
        "omegaconf",
        "cluster",
        "trainer",
        "serve",
        "dataprep",
        "evaluation",
        "deepspeed",
        "ray",
        "torch",
        "transformers",
        "numpy",
    },  # fmt: skip
}


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules_of(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def test_the_scanner_sees_imports_inside_functions():
    source = "import os\ndef f():\n    from cluster.schema import load_config\n"
    assert imported_modules(source) == {"os", "cluster"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_runtime_allows(package):
    assert modules_of(package), f"{package}/ has no modules"
    for path in modules_of(package):
        bad = imported_modules(path.read_text()) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


# Serve in layers: everything a request meets (the engine, the serving classes, the router)
# runs and is tested without Ray; only the deployment that mounts them imports it.
# The deployment, and the registry actor its replicas share run-time adapters through.
SERVE_RAY_MODULES = {"serve/deployment.py", "serve/adapter_registry.py"}
SERVE_RAY_FREE = [
    "serve/api/router.py",
    "serve/api/serving_completion.py",
    "serve/api/serving_chat.py",
    "serve/api/serving_tokenizer.py",
    "serve/generator.py",
    "serve/scheduler.py",
]


def test_only_the_serve_deployment_imports_ray():
    modules = {str(p.relative_to(REPO_ROOT)): p for p in modules_of("serve")}
    assert set(SERVE_RAY_FREE) <= set(modules), sorted(set(SERVE_RAY_FREE) - set(modules))
    for name, path in modules.items():
        if name not in SERVE_RAY_MODULES:
            assert "ray" not in imported_modules(path.read_text()), f"{name} imports ray"


def test_only_the_driver_package_composes_hydra_configs():
    for path in REPO_ROOT.glob("*/**/*.py"):
        top = path.relative_to(REPO_ROOT).parts[0]
        if top in PROJECT - {"cluster"}:
            assert "hydra" not in imported_modules(path.read_text()), path


def test_schemas_import_no_torch_at_module_level():
    # The driver composes configs before anything heavy is needed; torch loads lazily.
    for path in modules_of("schemas"):
        top_level = [
            n
            for n in ast.parse(path.read_text()).body
            if isinstance(n, (ast.Import, ast.ImportFrom))
        ]
        assert "torch" not in imported_modules(ast.unparse(ast.Module(top_level, []))), path


@pytest.mark.parametrize("package", sorted(PROJECT - {"bench"}))
def test_no_folder_holds_more_than_about_twelve_modules(package):
    for folder in {p.parent for p in modules_of(package)}:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 13, f"{folder.relative_to(REPO_ROOT)}: {len(modules)} modules"


# dataprep/ is laid out by pipeline step: a step may use the ones before it, never a later
# one, and the preparations (pipelines/, prepare.py) come last.
DATAPREP_STEPS = ["readers", "formatters", "filters", "dedup", "tokens", "pipelines"]
# Ray Data glue lives in these alone: the readers, filters, dedup and tokens functions run
# (and are unit-tested) without Ray, which hands them batches.
RAY_GLUE = {"dataprep/readers/ray_datasets.py", "dataprep/pipelines"}
MAX_DATAPREP_MODULE_LINES = 350


def run_time_imports(source: str) -> set[str]:
    """Dotted names of the modules ``source`` imports, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(source)
    for node in list(ast.walk(tree)):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            node.body = [ast.Pass()]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_import_scanner_skips_type_checking_blocks():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ray.data\n"
    assert run_time_imports(source) == {"typing"}


@pytest.mark.parametrize("step", DATAPREP_STEPS)
def test_a_dataprep_step_imports_no_later_step(step):
    later = DATAPREP_STEPS[DATAPREP_STEPS.index(step) + 1 :] + ["prepare"]
    for path in modules_of(f"dataprep/{step}"):
        for name in run_time_imports(path.read_text()):
            top, _, rest = name.partition(".")
            if top == "dataprep":
                assert rest.split(".")[0] not in later, f"{path.name} imports {name}: a later step"


def test_only_the_ray_data_glue_imports_ray_at_run_time():
    for path in modules_of("dataprep"):
        where = str(path.relative_to(REPO_ROOT))
        if any(where == glue or where.startswith(glue + "/") for glue in RAY_GLUE):
            continue
        ray = {n for n in run_time_imports(path.read_text()) if n.split(".")[0] == "ray"}
        assert not ray, f"{where} imports {sorted(ray)}: Ray Data glue belongs in {RAY_GLUE}"


def test_dataprep_defines_each_function_once_in_small_modules():
    defined: dict[str, str] = {}
    for path in modules_of("dataprep"):
        where = str(path.relative_to(REPO_ROOT))
        source = path.read_text()
        assert len(source.splitlines()) <= MAX_DATAPREP_MODULE_LINES, f"{where} is too long"
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in defined, f"{node.name}: in {defined[node.name]} and {where}"
                defined[node.name] = where


# Names that spell the run directory's layout: only rundir/ writes them as literals.
RUN_DIR_NAMES = ('"metrics.jsonl"', '"summary.json"', '"startup.json"', '"config.json"')


def test_the_run_directory_is_spelled_in_rundir_alone():
    for package in sorted(PROJECT - {"rundir", "bench"}):
        for path in modules_of(package):
            source = path.read_text()
            for name in RUN_DIR_NAMES:
                assert name not in source, f"{path.relative_to(REPO_ROOT)} spells {name}"


def test_test_modules_have_unique_names():
    """The test folders are not packages: pytest imports each test module by its file name,
    and a second module of the same name anywhere under tests/ fails the whole collection."""
    seen: dict[str, Path] = {}
    for path in sorted((REPO_ROOT / "tests").rglob("test_*.py")):
        if "__init__.py" in {p.name for p in path.parent.iterdir()}:
            continue  # inside a package: imported by its dotted name
        assert path.name not in seen, f"{path} and {seen[path.name]}: rename one"
        seen[path.name] = path


MAX_MODULE_LINES = 350  # bench/ excepted: a benchmark's cases and its report read together


def test_no_module_outside_bench_is_over_350_lines():
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    long = [
        f"{path}: {lines}"
        for path in tracked
        if not path.startswith("bench/")
        and (lines := len((REPO_ROOT / path).read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, long
