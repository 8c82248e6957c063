"""Evaluation entry point: perplexity, QA and translation metrics of one export.

python -m cluster.eval [--cfg] [export=DIR] [key=value ...]
"""

from __future__ import annotations

import json
from pathlib import Path

from cluster.cli import parse_args, print_config, run_cli
from cluster.evaluation import evaluate_exports, format_reports
from cluster.ray_setup import init_ray
from cluster.run_dir import check_writable, newest_export
from cluster.schema import load_config
from trainer.config import ConfigError
from trainer.finetune_config import EvalConfig


def resolve_export(cfg: EvalConfig) -> Path:
    if cfg.export is None:
        runs = Path(cfg.output_dir).expanduser().resolve()
        found = newest_export(str(runs))
        if found is None:
            raise ConfigError(
                f"export=null and there is no export under {runs}; allowed: run `make train` "
                "first, or name an export directory with export=PATH"
            )
        return found
    path = Path(cfg.export).expanduser().resolve()
    if not (path / "config.json").exists():
        raise ConfigError(
            f"export={cfg.export!r} is not allowed: a Hugging Face export directory "
            "(with config.json)"
        )
    return path


def main(argv: list[str]) -> int:
    overrides, show_cfg = parse_args("cluster.eval", argv)
    cfg = load_config("eval", overrides)
    if show_cfg:
        print_config(cfg)
        return 0
    export = resolve_export(cfg)
    output = Path(cfg.output).expanduser().resolve() if cfg.output else export.parent / "eval.json"
    check_writable(str(output.parent), "output")
    cache_dir = str(Path(cfg.cache_dir).expanduser().resolve())
    check_writable(cache_dir, "cache_dir")
    capacity = init_ray()
    if capacity.get("CPU", 0) < cfg.eval.num_cpus:
        raise ConfigError(
            f"eval.num_cpus={cfg.eval.num_cpus} is not allowed: the cluster has "
            f"{capacity.get('CPU', 0):g} CPUs"
        )
    [report] = evaluate_exports([str(export)], cfg.data, cfg.sft, cfg.eval, cache_dir)
    print(f"\n=== evaluation of {export} ===")
    print(format_reports([report], ["export"]))
    output.write_text(json.dumps(report, indent=2))
    print(f"\nreport: {output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
