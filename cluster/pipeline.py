"""The pipeline entry point: prepare -> pretrain -> finetune -> dpo -> eval -> serve config
(conf/pipeline.yaml), each stage an existing job run here through its ``main(overrides)``, on
the cluster this driver attaches to; each stage skipped when its manifest says it is
unchanged; at the end, the chain from the data to the served export.

python -m cluster.pipeline [--cfg] [key=value ...]   (make pipeline, make submit JOB=pipeline)
"""

from __future__ import annotations

from cluster.cli import load_or_show, run_cli
from cluster.schema import load_config
from cluster.stages.plan import absolute, plan
from cluster.stages.runner import run_pipeline
from cluster.stages.tracking import PipelineTracking
from cluster.training.tracking import check_tracking


def format_chain(manifests: list[dict]) -> str:
    """One line per stage (what it made, its headline figures, ran or skipped), then the
    chain of the last stage's lineage."""
    lines = []
    for m in manifests:
        made = ", ".join(o["id"] for o in m["outputs"].values())
        run = m.get("ids", {}).get("mlflow_run_id") or m.get("ids", {}).get("run_dir", "")
        figures = ", ".join(f"{k} {_figure(v)}" for k, v in m["headline"].items())
        state = "ran" if m["ran"] else "unchanged"
        lines.append(f"{m['stage']:<10} {state:<9} {made}  {figures}  {run}".rstrip())
    chain = " -> ".join(
        f"{m['stage']} {next(iter(m['outputs'].values()))['id'].split('@')[1][:8]}"
        + (f" ({_headline(m)})" if m["headline"] else "")
        for m in manifests
    )
    return "\n".join([*lines, f"chain: {chain}", f"lineage id: {manifests[-1]['lineage_id']}"])


def _headline(manifest: dict) -> str:
    key, value = next(iter(manifest["headline"].items()))
    return f"{key} {_figure(value)}"


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
