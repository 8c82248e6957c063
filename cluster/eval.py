"""Evaluation entry point: perplexity, QA and translation metrics and lm-evaluation-harness
tasks of one export, each export evaluated in a Ray task (CPUs or one GPU); or the lm-eval
tasks alone on a running endpoint (endpoint=URL). Fine-tuning runs evaluate their base and
result the same way (cluster/training/export_eval.py).

python -m cluster.eval [--cfg] [export=DIR | endpoint=URL] [key=value ...]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cluster.cli import load_or_show, run_cli
from cluster.ray_setup import init_ray
from cluster.runs.run_dir import check_writable
from cluster.runs.storage import check_uri, is_uri, probe_model_dir
from cluster.training.export_eval import evaluate_exports, save_predictions
from evaluation.report import format_reports
from rundir import layout
from rundir.stage_manifest import export_lineage
from rundir.store import absolute
from schemas.fields import ConfigError
from schemas.jobs import EvalJobConfig


def resolve_export(cfg: EvalJobConfig) -> Path | str:
    """The export to evaluate: a local path, or a URI (fetched by each node that reads it)."""
    if cfg.export is None:
        runs = absolute(cfg.output_dir)
        found = layout.newest_export(runs)
        if found is None:
            raise ConfigError(
                f"export=null and there is no export under {runs}; allowed: run `make train` "
                "first, or name an export directory with export=PATH"
            )
        return found
    uri = is_uri(cfg.export)
    if uri:
        check_uri(cfg.export, "export")
    path = cfg.export if uri else Path(cfg.export).expanduser().resolve()
    location = probe_model_dir(path, "export")
    if not (layout.is_export(location) or layout.is_adapter(location)):
        raise ConfigError(
            f"export={cfg.export!r} is not allowed: a Hugging Face export directory "
            "(with config.json) or a LoRA adapter's (with adapter_config.json)"
        )
    return path


def default_output(export: Path | str, output_dir: str = "runs") -> Path:
    """eval.json beside the export, unless that file is the run's own side-by-side report
    (fine-tuning and DPO runs write {name: report}): then eval-export.json, so that `make
    eval` never overwrites it. An export at a URI: <output_dir>/eval-<its run>.json here."""
    if is_uri(str(export)):
        run = str(export).partition("?")[0].rstrip("/").split("/")[-2]
        return Path(output_dir).expanduser().resolve() / f"eval-{run}.json"
    path = export.parent / layout.EVAL
    try:
        existing = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return path
    return path if "export" in existing or not existing else export.parent / "eval-export.json"


def refuse_a_key_in_plain_text(cfg: EvalJobConfig, api_key: str | None) -> None:
    """A bearer key over plain http to another machine is readable by anyone on the path:
    refused, as `make submit` refuses the Ray token, unless the network is trusted."""
    from urllib.parse import urlsplit

    from schemas.serving import is_loopback

    url = urlsplit(cfg.endpoint)
    if not api_key or url.scheme != "http" or is_loopback(url.hostname):
        return
    if not cfg.allow_plain_http_key:
        raise ConfigError(
            f"endpoint={cfg.endpoint!r} would receive ${cfg.api_key_env} over plain http; "
            "allowed: an https:// endpoint, an ssh -L tunnel to http://127.0.0.1, or "
            "allow_plain_http_key=true on a network you trust"
        )


def evaluate_endpoint(cfg: EvalJobConfig) -> dict:
    """The lm-eval tasks on a running endpoint, from this process (HTTP only, no Ray)."""
    import httpx

    from evaluation.lm_eval_runner import on_endpoint

    base = cfg.endpoint.rstrip("/")
    api_key = os.environ.get(cfg.api_key_env) or None
    refuse_a_key_in_plain_text(cfg, api_key)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        models = httpx.get(f"{base}/models", headers=headers, timeout=30)
        info = httpx.get(f"{base.removesuffix('/v1')}/tokenizer_info", headers=headers, timeout=30)
    except httpx.HTTPError as e:
        raise ConfigError(f"endpoint={cfg.endpoint!r} cannot be reached ({e})") from None
    if models.status_code != 200 or info.status_code != 200:
        raise ConfigError(
            f"endpoint={cfg.endpoint!r} answered {models.status_code} to /v1/models and "
            f"{info.status_code} to /tokenizer_info; allowed: a zeroray (or vLLM) endpoint, "
            f"with its key in ${cfg.api_key_env} if it has one"
        )
    ids = [m["id"] for m in models.json()["data"]]
    if cfg.endpoint_model is not None and cfg.endpoint_model not in ids:
        raise ConfigError(
            f"endpoint_model={cfg.endpoint_model!r} is not served by "
            f"endpoint={cfg.endpoint!r}; allowed: " + ", ".join(ids)
        )
    model = cfg.endpoint_model or ids[0]
    context = info.json()["model_max_length"]
    results = on_endpoint(base, model, context, cfg.eval.lm_eval, api_key)
    return {"endpoint": base, "model": model, "lm_eval": results, "samples": []}


def main(argv: list[str]) -> int:
    cfg = load_or_show("cluster.eval", "eval", argv)
    if cfg is None:
        return 0
    if cfg.endpoint:
        output = Path(cfg.output or Path(cfg.output_dir) / "endpoint_eval.json").resolve()
        check_writable(str(output.parent), "output")
        report = evaluate_endpoint(cfg)
        print(f"\n=== evaluation of {report['endpoint']} ({report['model']}) ===")
        print(format_reports([report], ["endpoint"]))
        output.write_text(json.dumps(report, indent=2))
        print(f"\nreport: {output}")
        return 0
    export = resolve_export(cfg)
    output = (
        Path(cfg.output).expanduser().resolve()
        if cfg.output
        else default_output(export, cfg.output_dir)
    )
    check_writable(str(output.parent), "output")
    store = cfg.prepared_dir or cfg.cache_dir
    key = "prepared_dir" if cfg.prepared_dir else "cache_dir"
    if is_uri(store):
        check_uri(store, key)
    store = str(absolute(store))
    check_writable(store, key)
    capacity = init_ray()
    if capacity.get("CPU", 0) < cfg.eval.num_cpus:
        raise ConfigError(
            f"eval.num_cpus={cfg.eval.num_cpus} is not allowed: the cluster has "
            f"{capacity.get('CPU', 0):g} CPUs"
        )
    [report] = evaluate_exports([str(export)], cfg.data, cfg.sft, cfg.eval, store)
    report["lineage"] = export_lineage(export, absolute(cfg.output_dir))
    save_predictions([report], ["export"], output.with_name(output.stem + "-predictions.jsonl"))
    print(f"\n=== evaluation of {export} ===")
    print(format_reports([report], ["export"]))
    print_lineage(report["lineage"])
    output.write_text(json.dumps(report, indent=2))
    print(f"\nreport: {output}")
    return 0


def print_lineage(lineage: dict) -> None:
    if "stage_manifest" in lineage:
        print(
            f"\nmade by stage {lineage['stage']} of pipeline {lineage['pipeline']} "
            f"(lineage {lineage['lineage_id']}): {lineage['stage_manifest']}"
        )
    if "export_manifest" in lineage:
        print(f"export manifest: {lineage['export_manifest']['path']}")


if __name__ == "__main__":
    run_cli(main)
