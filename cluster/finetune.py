"""Fine-tuning entry point: the pretraining run (cluster/train.py) on instruction data, then
the base and the fine-tuned export evaluated side by side.

python -m cluster.finetune [--cfg] [group=option ...] [key=value ...]
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from cluster.cli import load_or_show, run_cli
from cluster.eval import evaluate_exports
from cluster.runs.run_dir import newest_export
from cluster.runs.storage import push_driver_outputs
from cluster.schema import compose_config, to_typed
from cluster.summary import build_summary, write_and_print
from cluster.train import TrainingRun, run_training
from dataprep.cache import PreparedData
from dataprep.prepare import prepare_sft_data
from evaluation.report import format_reports
from schemas.fields import ConfigError
from schemas.jobs import FinetuneJobConfig
from trainer.ds_config import global_batch_size

BASE_EXPERIMENT = "pretrain"  # where `make train` puts its runs


def load_finetune_config(
    overrides: list[str],
    config_name: str = "finetune",
    schema: type = FinetuneJobConfig,
    base_experiment: str = BASE_EXPERIMENT,
    base_command: str = "make train",
):
    """Compose conf/<config_name>.yaml; with no base model named, take the newest export of
    ``base_experiment`` (before validation, which requires one)."""
    cfg = compose_config(config_name, overrides)
    if cfg.model.name_or_path is None:
        runs = Path(cfg.output_dir).expanduser().resolve() / base_experiment
        base = newest_export(str(runs.parent), base_experiment)
        if base is None:
            raise ConfigError(
                f"model.name_or_path=null and there is no {base_experiment} export under "
                f"{runs}; allowed: run `{base_command}` first, or name an export directory "
                "or hub id"
            )
        cfg.model.name_or_path = str(base)
    return to_typed(cfg, schema)


def check_context(cfg: FinetuneJobConfig) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model.name_or_path)
    context = getattr(config, "max_position_embeddings", None) or config.n_positions
    if cfg.trainer.seq_len > context:
        raise ConfigError(
            f"trainer.seq_len={cfg.trainer.seq_len} is not allowed: must be <= the base "
            f"model's context of {context} tokens"
        )


def prepare_finetuning(cfg: FinetuneJobConfig) -> PreparedData:
    tokenizer_path = cfg.tokenizer.name_or_path or cfg.model.name_or_path
    prepared = prepare_sft_data(cfg.sft, tokenizer_path, cfg.trainer.seq_len, cfg.cache_dir)
    return report_prepared(cfg, prepared, "sft", "examples")


def report_prepared(cfg: FinetuneJobConfig, prepared: PreparedData, kind: str, unit: str):
    """Print what preparation kept and skipped; with ``epochs``, set trainer.max_steps."""
    stats = prepared.stats
    for split in ("train", "validation"):
        s, bad = stats[split], stats[split]["bad_records"]
        print(
            f"[zeroray] {kind} {split}: {s['examples']} {unit} -> {s['rows']} rows of "
            f"{cfg.trainer.seq_len} ({s['response_tokens']} response tokens); skipped "
            f"{bad['bad']} of {bad['records']} records {bad['by_reason'] or ''}".rstrip(),
            flush=True,
        )
    if cfg.epochs is not None:
        per_step = global_batch_size(cfg.trainer, cfg.scaling.max_workers)
        steps = max(1, math.ceil(cfg.epochs * stats["train"]["rows"] / per_step))
        cfg.trainer = dataclasses.replace(cfg.trainer, max_steps=steps)
        print(f"[zeroray] {cfg.epochs} epochs = {steps} steps of {per_step} rows", flush=True)
    return prepared


def main(argv: list[str]) -> int:
    cfg = load_or_show("cluster.finetune", "finetune", argv, load=load_finetune_config)
    if cfg is None:
        return 0
    check_context(cfg)
    run = run_training(cfg, prepare_finetuning)
    finish_run(cfg, run, ["base", "fine-tuned"])
    return 0


def finish_run(cfg: FinetuneJobConfig, run: TrainingRun, names: list[str]) -> None:
    """Summary, the starting model and the result evaluated side by side, outputs pushed."""
    summary = build_summary(
        run.run_dir, run.prepared.stats, run.prepared.cache_hit, run.wall_s, cfg.num_samples
    )
    export = run.run_dir / "export"
    if summary["exported"] and (export / "config.json").exists():
        reports = evaluate_exports(
            [cfg.model.name_or_path, str(export)], cfg.data, cfg.sft, cfg.eval, cfg.cache_dir
        )
        print(f"\n=== evaluation: {names[0]} vs {names[1]} ===")
        print(format_reports(reports, names))
        (run.run_dir / "eval.json").write_text(json.dumps(dict(zip(names, reports)), indent=2))
        summary["eval_json"] = str(run.run_dir / "eval.json")
    write_and_print(summary, run.run_dir)
    push_driver_outputs(cfg.output_dir, cfg.experiment, run.run_dir)


if __name__ == "__main__":
    run_cli(main)
