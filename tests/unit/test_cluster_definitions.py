"""The cluster definitions in deploy/ agree with Ray's schema, with this project's commands
and configs, and with each other: one image, one Ray version, GPU nodes the multi-node
scaling config fits on."""

from __future__ import annotations

import ast
import copy
import posixpath
import re
import shlex
from pathlib import Path

import pytest
import yaml
from image_contents import (
    dockerignored,
    entry_points,
    import_closure,
    installed,
    instructions,
    package_of,
    read_image,
    source_file,
)

from cluster.jobs import entry_modules
from cluster.schema import load_config
from schemas.serving import ServeConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def _toml_loads(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads(text)


DEPLOY = REPO_ROOT / "deploy"
KUBERAY = {
    p.stem: yaml.safe_load(p.read_text()) for p in sorted((DEPLOY / "kuberay").glob("*.yaml"))
}
PYPROJECT = _toml_loads((REPO_ROOT / "pyproject.toml").read_text())
RAY_VERSION = next(
    re.search(r"==([\d.]+)", d).group(1)
    for d in PYPROJECT["project"]["dependencies"]
    if d.startswith("ray[")
)
MULTI_NODE = load_config("train", ["scaling=multi-node"]).scaling
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
DOCKERIGNORE = (DEPLOY / "Dockerfile.dockerignore").read_text()
FIND = PYPROJECT["tool"]["setuptools"]["packages"]["find"]


@pytest.fixture(scope="module")
def aws() -> dict:
    return yaml.safe_load((DEPLOY / "aws.yaml").read_text())


def _validate_with_ray(config: dict) -> None:
    # What `ray up` does before it launches anything: fill in the provider's defaults, then
    # check against ray/autoscaler/ray-schema.json.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_launcher_yaml_passes_rays_own_validation(aws):
    _validate_with_ray(aws)


def test_rays_validation_would_catch_a_typo(aws):
    import jsonschema

    broken = copy.deepcopy(aws)
    broken["available_node_types"]["gpu_worker"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validate_with_ray(broken)


def test_launcher_has_a_cpu_head_and_autoscaling_gpu_nodes_the_scaling_config_fits(aws):
    types = aws["available_node_types"]
    head = types[aws["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 < MULTI_NODE.num_nodes <= gpu["max_workers"]
    assert gpu["resources"]["GPU"] == MULTI_NODE.gpus_per_node
    assert gpu["resources"]["CPU"] >= MULTI_NODE.gpus_per_node * MULTI_NODE.cpus_per_worker
    assert any("pip install" in c and "/home/ray/zeroray" in c for c in aws["setup_commands"])
    assert aws["file_mounts"]["/home/ray/zeroray"] == "."
    # Shared storage for output_dir and cache_dir, visible inside every node's container.
    assert "-v /shared:/shared" in aws["docker"]["run_options"]
    assert any("/shared" in c and "mount" in c for c in aws["initialization_commands"])


def _containers(doc) -> list[dict]:
    """Every container spec anywhere in a manifest."""
    found = []
    if isinstance(doc, dict):
        if "image" in doc and "name" in doc:
            found.append(doc)
        for value in doc.values():
            found += _containers(value)
    elif isinstance(doc, list):
        for value in doc:
            found += _containers(value)
    return found


def _cluster_spec(kind: str) -> dict:
    doc = KUBERAY[kind]
    return {
        "raycluster": lambda: doc["spec"],
        "rayjob": lambda: doc["spec"]["rayClusterSpec"],
        "rayservice": lambda: doc["spec"]["rayClusterConfig"],
    }[kind]()


def test_one_image_and_one_ray_version_everywhere(aws):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:([\d.]+)-py(\d)(\d+)-gpu$", dockerfile, re.M)
    assert base, "the Dockerfile builds on Ray's GPU image"
    assert base.group(1) == RAY_VERSION
    minimum = tuple(map(int, PYPROJECT["project"]["requires-python"][2:].split(".")))
    assert (int(base.group(2)), int(base.group(3))) >= minimum
    image = aws["docker"]["image"]
    assert image.endswith(f"/zeroray:{PYPROJECT['project']['version']}")
    assert f"-t {image} " in dockerfile  # the build command the Dockerfile documents
    for kind in ("raycluster", "rayjob", "rayservice"):
        assert KUBERAY[kind]["apiVersion"] == "ray.io/v1"
        assert _cluster_spec(kind)["rayVersion"] == RAY_VERSION
        images = {c["image"] for c in _containers(KUBERAY[kind])}
        assert images == {image}, kind


@pytest.mark.parametrize("kind", ["raycluster", "rayjob"])
def test_training_gpu_groups_fit_the_multi_node_config(kind):
    spec = _cluster_spec(kind)
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = spec["workerGroupSpecs"]
    assert group["maxReplicas"] >= MULTI_NODE.num_nodes
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == MULTI_NODE.gpus_per_node
    assert int(limits["cpu"]) >= MULTI_NODE.gpus_per_node * MULTI_NODE.cpus_per_worker


def test_every_ray_pod_mounts_the_shared_claim():
    claim = KUBERAY["shared-storage"]["metadata"]["name"]
    for kind in ("raycluster", "rayjob", "rayservice"):
        spec = _cluster_spec(kind)
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            pod = group["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            assert volumes[mounts["/shared"]]["persistentVolumeClaim"]["claimName"] == claim


def test_rayjob_entrypoint_is_a_real_command_whose_overrides_compose():
    argv = shlex.split(KUBERAY["rayjob"]["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"]
    module, overrides = argv[2], argv[3:]
    assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    cfg = load_config("train", overrides)  # the checks `python -m cluster.train` runs first
    spec = _cluster_spec("rayjob")
    (group,) = spec["workerGroupSpecs"]
    assert cfg.scaling.use_gpu and cfg.scaling.num_nodes == group["replicas"]
    assert cfg.scaling.max_workers == cfg.scaling.num_nodes * cfg.scaling.gpus_per_node
    for key in ("output_dir", "cache_dir"):
        assert getattr(cfg, key).startswith("/shared/"), key


def test_rayservice_serves_this_projects_app_with_valid_arguments():
    serve_config = yaml.safe_load(KUBERAY["rayservice"]["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    module, attr = app["import_path"].split(":")
    source = (REPO_ROOT / (module.replace(".", "/") + ".py")).read_text()
    assert attr in {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    args = ServeConfig.from_dict(dict(app["args"]))  # what build_app does with them
    assert args.model_dir.startswith("/shared/runs/")
    gpu_defaults = load_config("serve", ["serve=gpu"]).serve
    assert (args.num_gpus, args.num_cpus) == (gpu_defaults.num_gpus, gpu_defaults.num_cpus)
    (group,) = _cluster_spec("rayservice")["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    # Enough pods for the most replicas autoscaling may ask for, each fitting one replica.
    assert int(limits["nvidia.com/gpu"]) >= args.num_gpus
    assert int(limits["cpu"]) >= args.num_cpus
    pods_needed = args.autoscaling.max_replicas * args.num_gpus / int(limits["nvidia.com/gpu"])
    assert group["maxReplicas"] >= pods_needed
    assert group["minReplicas"] >= args.autoscaling.min_replicas * args.num_gpus
    assert serve_config["http_options"]["host"] == "0.0.0.0"


def test_rayservice_replicas_get_their_key_from_a_secret():
    # Serve listens on 0.0.0.0 there: a replica without the key refuses to start, so every
    # pod that runs replicas reads the variable args.api_key_env names from a Secret.
    serve_config = yaml.safe_load(KUBERAY["rayservice"]["spec"]["serveConfigV2"])
    args = ServeConfig.from_dict(dict(serve_config["applications"][0]["args"]))
    assert args.api_key is None and not args.allow_unauthenticated
    for group in _cluster_spec("rayservice")["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert "secretKeyRef" in env[args.api_key_env]["valueFrom"], container["name"]
            assert "value" not in env[args.api_key_env]


def test_every_cluster_turns_token_auth_on_and_holds_no_secret(aws):
    for kind in ("raycluster", "rayjob", "rayservice"):
        assert _cluster_spec(kind)["authOptions"] == {"mode": "token"}, kind
    starts = aws["head_start_ray_commands"] + aws["worker_start_ray_commands"]
    for command in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token" in command, command
    # The token reaches the nodes as a file copied by `ray up`, never as text in a definition.
    assert aws["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    for path in [DEPLOY / "aws.yaml", *sorted((DEPLOY / "kuberay").glob("*.yaml"))]:
        text = path.read_text()
        assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]\s*\S", text), path
        assert not re.search(r"api_key:\s*(?!null)\S", text), path


# ---- the image holds what the manifests run ----


def manifest_entry_points() -> dict[str, set[str]]:
    """What runs where: each manifest -> the modules it starts."""
    from cluster.serve import serve_config_file

    runs = {f"deploy/kuberay/{kind}.yaml": entry_points(doc) for kind, doc in KUBERAY.items()}
    runs["deploy/aws.yaml"] = entry_points(yaml.safe_load((DEPLOY / "aws.yaml").read_text()))
    commands = [args for op, args in instructions(DOCKERFILE) if op in ("RUN", "CMD", "ENTRYPOINT")]
    runs["deploy/Dockerfile"] = entry_points(commands)
    serve_cfg = load_config("serve", ["checkpoint=/shared/runs/x/export"])
    runs["make serve-config"] = entry_points(serve_config_file(serve_cfg))
    # `make submit` on raycluster.yaml or aws.yaml: the job entry, which runs a job's module.
    runs["make submit"] = {"cluster.ops.job_entry", *entry_modules()}
    return runs


def image_gaps(dockerfile: str, dockerignore: str) -> list[str]:
    """What the image would lack to run the manifests' entry points, one line per folder."""
    image = read_image(dockerfile, dockerignore)
    modules, missing = import_closure(set().union(*manifest_entry_points().values()))
    gaps = [f"{name}: imported by {who}, but not in this checkout" for name, who in missing.items()]
    roots = set(image.installs)
    if len(roots) != 1:
        return [*gaps, f"pip installs the project from {sorted(roots)}; expected one DIR"]
    (root,) = roots
    needed = {"pyproject.toml": "pip install", "README.md": "pyproject's readme"}
    for path in sorted((REPO_ROOT / "conf").rglob("*.yaml")):  # cluster/schema.py's CONF_DIR
        needed[str(path.relative_to(REPO_ROOT))] = "composed by the entry points"
    for package, globs in PYPROJECT["tool"]["setuptools"].get("package-data", {}).items():
        for path in (p for g in globs for p in (REPO_ROOT / package).glob(g)):
            needed[str(path.relative_to(REPO_ROOT))] = f"package data of {package}"
    needed |= {source_file(m): f"imported by {who}" for m, who in modules.items() if source_file(m)}
    lacking: dict[str, list[str]] = {}
    for path, why in sorted(needed.items()):
        if posixpath.join(root, path) not in image.targets(path):
            lacking.setdefault(path.split("/")[0], []).append(f"{path} ({why})")
    gaps += [f"{top}: not copied to {root}/: {', '.join(p[:3])}" for top, p in lacking.items()]
    for package in sorted({package_of(m) for m in modules}):
        if not installed(package, FIND):
            gaps.append(f"{package or '(a root module)'}: not in pyproject's packages.find")
    return gaps


def test_the_manifests_name_modules_the_collector_sees():
    runs = manifest_entry_points()
    assert "cluster.train" in runs["deploy/kuberay/rayjob.yaml"]
    assert runs["deploy/kuberay/rayservice.yaml"] == {"serve.deployment"}
    assert runs["make serve-config"] == {"serve.deployment"}


def test_the_image_holds_and_installs_every_module_the_manifests_run():
    assert image_gaps(DOCKERFILE, DOCKERIGNORE) == []


def test_the_check_catches_an_image_that_copies_a_list_of_folders():
    folders = "\n".join(f"COPY {d} {d}" for d in ("conf", "cluster", "trainer", "serve", "bench"))
    dockerfile = f"WORKDIR /app\nCOPY pyproject.toml README.md ./\n{folders}\nRUN pip install -e ."
    gaps = " | ".join(image_gaps(dockerfile, DOCKERIGNORE))
    for missing in ("schemas", "dataprep", "evaluation"):
        assert f"{missing}: not copied to /app/" in gaps
    assert "cluster: " not in gaps
    assert not installed("schemas", {"include": ["cluster*"]})
    assert installed("cluster.ops", {"include": ["cluster*"]})


def test_every_package_the_project_imports_is_installed():
    tops = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")}
    assert tops and all(installed(top, FIND) for top in tops), sorted(tops)
    modules = {
        str(p.relative_to(REPO_ROOT).with_suffix("")).replace("/", ".")
        for top in tops
        for p in (REPO_ROOT / top).rglob("*.py")
    }
    found, missing = import_closure(modules)
    assert not missing
    assert [p for p in sorted({package_of(m) for m in found}) if not installed(p, FIND)] == []


def test_dependencies_install_in_a_layer_before_any_code():
    image = read_image(DOCKERFILE, DOCKERIGNORE)
    before = image.copies_before_dependencies
    assert before is not None, "no `pip install -r ...` layer for the dependencies"
    code = [str(p.relative_to(REPO_ROOT)) for p in sorted(REPO_ROOT.glob("*/**/*.py"))]
    assert [p for p in code if image.targets(p, before)] == []


def test_the_image_gets_the_code_and_no_secrets():
    for kept in ("cluster/runs/run_dir.py", "conf/train.yaml", "evaluation/lm_eval_tasks/x.yaml"):
        assert not dockerignored(kept, DOCKERIGNORE), kept
    for secret in (
        ".env",
        "deploy/.env.local",
        "deploy/server.pem",
        "keys/id_rsa",
        "auth_token",
        "a/api.token",
        ".aws/credentials",
        "x/.netrc",
        "runs/x/metrics.jsonl",
        "cache/data/t.json",
        ".venv/bin/python",
        "serve/__pycache__/a.pyc",
    ):
        assert dockerignored(secret, DOCKERIGNORE), secret


def test_rayservice_pods_start_serve_with_make_serves_ingress():
    """Serve reads its ingress from each node's environment at start-up: every pod of the
    RayService (head and workers: the ingress and the replicas read it) has `make serve`'s."""
    from cluster.serve import ingress_env

    default = load_config("serve", [])
    wanted = ingress_env(default.ingress, default.throughput_optimized)
    assert "RAY_SERVE_ENABLE_HA_PROXY" in wanted
    containers = _containers(KUBERAY["rayservice"])
    assert len(containers) == 2
    for container in containers:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}  # a Secret: valueFrom
        assert env | wanted == env, container["name"]
