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
from cluster.run_dir import newest_export
from cluster.schema import compose_config, to_typed
from cluster.storage import push_driver_outputs
from cluster.summary import build_summary, write_and_print
from cluster.train import run_training
from dataprep.pretrain_data import PreparedData
from dataprep.sft_data import prepare_sft_data
from evaluation.report import format_reports
from schemas.fields import ConfigError
from schemas.jobs import FinetuneJobConfig
from trainer.ds_config import global_batch_size

BASE_EXPERIMENT = "pretrain"  # where `make train` puts its runs


def load_finetune_config(overrides: list[str]) -> FinetuneJobConfig:
    """Compose conf/finetune.yaml; with no base model named, take the newest pretraining
    export (before validation, which requires one)."""
    cfg = compose_config("finetune", overrides)
    if cfg.model.name_or_path is None:
        runs = Path(cfg.output_dir).expanduser().resolve() / BASE_EXPERIMENT
        base = newest_export(str(runs.parent), BASE_EXPERIMENT)
        if base is None:
            raise ConfigError(
                f"model.name_or_path=null and there is no pretraining export under {runs}; "
                "allowed: run `make train` first, or name an export directory or hub id"
            )
        cfg.model.name_or_path = str(base)
    return to_typed(cfg, FinetuneJobConfig)


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
    stats = prepared.stats
    for split in ("train", "validation"):
        s, bad = stats[split], stats[split]["bad_records"]
        print(
            f"[zeroray] sft {split}: {s['examples']} examples -> {s['rows']} rows of "
            f"{cfg.trainer.seq_len} ({s['response_tokens']} response tokens); skipped "
            f"{bad['bad']} of {bad['records']} records {bad['by_reason'] or ''}".rstrip(),
            flush=True,
        )
    if cfg.epochs is not None:
        per_step = global_batch_size(cfg.trainer, cfg.scaling.num_workers)
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
    summary = build_summary(
        run.run_dir, run.prepared.stats, run.prepared.cache_hit, run.wall_s, cfg.num_samples
    )
    export = run.run_dir / "export"
    if summary["exported"] and (export / "config.json").exists():
        names = ["base", "fine-tuned"]
        reports = evaluate_exports(
            [cfg.model.name_or_path, str(export)], cfg.data, cfg.sft, cfg.eval, cfg.cache_dir
        )
        print("\n=== evaluation: base vs fine-tuned ===")
        print(format_reports(reports, names))
        (run.run_dir / "eval.json").write_text(json.dumps(dict(zip(names, reports)), indent=2))
        summary["eval_json"] = str(run.run_dir / "eval.json")
    write_and_print(summary, run.run_dir)
    push_driver_outputs(cfg.output_dir, cfg.experiment, run.run_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
