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
from planner.alternatives import make_plan
from planner.report import format_plan, plan_json, plot_plan


def main(argv: list[str]) -> int:
    as_json, finetune = "--json" in argv, "--finetune" in argv
    picture = None
    if "--picture" in argv:
        i = argv.index("--picture")
        picture, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    argv = [a for a in argv if a not in ("--json", "--finetune")]
    if finetune:
        from cluster.training.recipes import SFT
        from cluster.training.run import load_job_config

        cfg = load_or_show("cluster.plan", "finetune", argv, load=lambda o: load_job_config(SFT, o))
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
