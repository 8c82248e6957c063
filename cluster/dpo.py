"""Preference tuning entry point: DPO on pairs of a chosen and a rejected answer, the same
Ray Train + DeepSpeed run as fine-tuning (checkpoints, exact resume, export), starting from
the newest fine-tuning export, and ending with the starting model and the result evaluated
side by side.

python -m cluster.dpo [--cfg] [group=option ...] [key=value ...]
"""

from __future__ import annotations

from cluster.cli import load_or_show, run_cli
from cluster.finetune import check_context, finish_run, load_finetune_config, report_prepared
from cluster.train import run_training
from dataprep.cache import PreparedData
from dataprep.prepare import prepare_preference_data
from schemas.jobs import DPOJobConfig

BASE_EXPERIMENT = "finetune"  # where `make finetune` puts its runs


def load_dpo_config(overrides: list[str]) -> DPOJobConfig:
    return load_finetune_config(overrides, "dpo", DPOJobConfig, BASE_EXPERIMENT, "make finetune")


def prepare_preferences(cfg: DPOJobConfig) -> PreparedData:
    tokenizer_path = cfg.tokenizer.name_or_path or cfg.model.name_or_path
    prepared = prepare_preference_data(cfg.pref, tokenizer_path, cfg.trainer.seq_len, cfg.cache_dir)
    return report_prepared(cfg, prepared, "pref", "pairs")


def main(argv: list[str]) -> int:
    cfg = load_or_show("cluster.dpo", "dpo", argv, load=load_dpo_config)
    if cfg is None:
        return 0
    check_context(cfg)
    run = run_training(cfg, prepare_preferences)
    finish_run(cfg, run, ["before DPO", "after DPO"])
    return 0


if __name__ == "__main__":
    run_cli(main)
