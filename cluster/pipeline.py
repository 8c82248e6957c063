"""The pipeline entry point: prepare -> pretrain -> finetune -> dpo -> eval -> serve config
(conf/pipeline.yaml), each stage an existing job run here through its ``main(overrides)``, on
the cluster this driver attaches to; each stage skipped when its manifest says it is
unchanged; at the end, the chain from the data to the served export.

python -m cluster.pipeline [--cfg] [key=value ...]   (make pipeline, make submit JOB=pipeline)
"""

from __future__ import annotations

from pathlib import Path

from cluster.cli import load_or_show, run_cli
from cluster.schema import load_config
from cluster.stages.plan import absolute, plan
from cluster.stages.runner import run_pipeline
from cluster.stages.tracking import PipelineTracking
from cluster.training.tracking import check_tracking


def format_chain(manifests: list[dict]) -> str:
    """One line per stage (ran or unchanged, what it made, its headline figures, its MLflow
    run), then the chain from the data to the last stage, each link's headline figure."""
    lines = []
    for m in manifests:
        made = ", ".join(o["id"] for o in m["outputs"].values())
        figures = ", ".join(f"{k} {_figure(v)}" for k, v in m["headline"].items())
        if m["job"] == "serve-config" and m["inputs"]:
            figures = f"serves lineage {m['inputs'][0]['lineage_id']}"
        run = m.get("ids", {}).get("mlflow_run_id")
        state = "ran" if m["ran"] else "unchanged"
        tracked = f"  (MLflow run {run})" if run else ""
        lines.append(f"{m['stage']:<10} {state:<9} {made}  {figures}{tracked}".rstrip())
    chain = " -> ".join(_link(m) for m in manifests)
    return "\n".join([*lines, f"chain: {chain}", f"lineage id: {manifests[-1]['lineage_id']}"])


def _link(manifest: dict) -> str:
    """A stage as the chain names it: a training stage by its run, the others by what they
    made (its content id), with the first headline figure."""
    run_dir = manifest.get("ids", {}).get("run_dir")
    name, made = next(iter(manifest["outputs"].items()))
    what = f"run {Path(run_dir).name}" if run_dir else f"{name} {made['sha256'][:8]}"
    figure = next(iter(manifest["headline"].items()), None)
    return f"{manifest['stage']} {what}" + (
        f" ({figure[0]} {_figure(figure[1])})" if figure else ""
    )


def _figure(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str]) -> int:
    cfg = load_or_show(
        "cluster.pipeline", "pipeline", argv, load=lambda o: load_config("pipeline", o)
    )
    if cfg is None:
        return 0
    cfg = absolute(cfg)
    planned = plan(cfg)  # every stage's config checked: bad input before anything runs
    tracking = PipelineTracking(cfg, check_tracking(cfg))
    manifests = run_pipeline(cfg, planned, tracking)
    ran = [m["stage"] for m in manifests if m["ran"]]
    print(f"\n=== pipeline {cfg.name}: ran {', '.join(ran) or 'nothing (all unchanged)'} ===")
    print(format_chain(manifests))
    return 0


if __name__ == "__main__":
    run_cli(main)
