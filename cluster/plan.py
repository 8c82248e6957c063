"""`make plan`: memory, time and cost of a training run and its alternatives, before it
starts (no Ray; the model is built on the meta device). `make train` and `make finetune`
run the same estimate first and refuse a run that does not fit (`plan.check=false` skips it).

python -m cluster.plan [--finetune] [--json] [--picture PATH] [--cfg] [key=value ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cluster.cli import load_or_show, run_cli
from cluster.schema import load_config
from planner.alternatives import check_fit, make_plan
from planner.report import KINDS, format_plan, plan_json, plot_plan
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig


def refuse_if_it_does_not_fit(cfg: TrainJobConfig) -> None:
    """One line with the numbers and the plan's suggestion, before any cluster resource."""
    if not cfg.plan.check:
        return
    plan = check_fit(cfg)
    if plan is None:
        return
    mine, best = plan.configured, plan.recommended
    gib = 1024**3
    parts = ", ".join(f"{k} {mine.memory[k] / gib:.1f}" for k in KINDS[:-1])
    advice = (
        f"e.g. {' '.join(best.candidate.overrides(against=mine.candidate))} "
        f"({best.candidate.label()}: {best.device_bytes / gib:.1f} GiB)"
        if best
        else "more devices, a smaller model or shorter sequences (nothing planned fits)"
    )
    raise ConfigError(
        f"plan: {mine.candidate.label()} needs {mine.device_bytes / gib:.1f} GiB per device "
        f"({parts}) but {mine.usable_bytes / gib:.1f} GiB are usable; allowed: a "
        f"configuration that fits, {advice}, or plan.check=false (`make plan` shows all)"
    )


def main(argv: list[str]) -> int:
    as_json, finetune = "--json" in argv, "--finetune" in argv
    picture = None
    if "--picture" in argv:
        i = argv.index("--picture")
        picture, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    argv = [a for a in argv if a not in ("--json", "--finetune")]
    if finetune:
        from cluster.finetune import load_finetune_config

        cfg = load_or_show("cluster.plan", "finetune", argv, load=load_finetune_config)
    else:
        cfg = load_or_show("cluster.plan", "train", argv, load=lambda o: load_config("train", o))
    if cfg is None:
        return 0
    plan = make_plan(cfg)
    if as_json:
        print(json.dumps(plan_json(plan), indent=2))
        return 0
    print(format_plan(plan))
    if picture is None and "://" not in cfg.output_dir:
        picture = str(Path(cfg.output_dir) / "plan.png")
    if picture:
        Path(picture).parent.mkdir(parents=True, exist_ok=True)
        plot_plan(plan, picture)
        print(f"picture       : {picture}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    run_cli(main)
