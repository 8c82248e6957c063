"""One recipe per kind of training job. A recipe says where the job's starting model comes
from, how its data is prepared, which objective the workers minimise, and how the run ends;
everything else (checks, resume, Ray, the TorchTrainer, the summary) is the same run for
every kind (cluster/training/run.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from console import log
from dataprep.cache import PreparedData
from dataprep.prepare import prepare_data, prepare_preference_data, prepare_sft_data
from rundir.node_cache import local_copy
from schemas.jobs import DPOJobConfig, FinetuneJobConfig, TrainJobConfig


@dataclass(frozen=True)
class Recipe:
    job: str  # the job's name, its Hydra config (conf/<job>.yaml) and its module cluster.<job>
    prepare: Callable[[TrainJobConfig], PreparedData]
    objective: str = "next_token"  # what the workers minimise (schemas/run_spec.py)
    # The starting model when model.name_or_path is null: the newest export of this
    # experiment, made by this command. None: the job builds its model from config.
    base_experiment: str | None = None
    base_command: str | None = None
    # The starting model and the result evaluated side by side at the end, under these names.
    compare_as: tuple[str, str] | None = None


def prepare_pretraining(cfg: TrainJobConfig) -> PreparedData:
    prepared = prepare_data(
        cfg.data, cfg.tokenizer, cfg.trainer.seq_len, cfg.prepared_dir, cfg.model.name_or_path
    )
    log.info(
        f"data: {'cache hit' if prepared.cache_hit else 'prepared'} "
        f"{prepared.root}: {prepared.stats['tokens']} tokens, "
        f"cleaning {prepared.stats['cleaning']}"
    )
    return prepared


def prepare_instructions(cfg: FinetuneJobConfig) -> PreparedData:
    prepared = prepare_sft_data(
        cfg.sft, _tokenizer_path(cfg), cfg.trainer.seq_len, cfg.prepared_dir
    )
    report_chat_data(prepared, cfg.trainer.seq_len, "sft", "examples")
    return prepared


def prepare_preferences(cfg: DPOJobConfig) -> PreparedData:
    prepared = prepare_preference_data(
        cfg.pref, _tokenizer_path(cfg), cfg.trainer.seq_len, cfg.prepared_dir
    )
    report_chat_data(prepared, cfg.trainer.seq_len, "pref", "pairs")
    return prepared


def _tokenizer_path(cfg: FinetuneJobConfig) -> str:
    # A base export at a URI: its tokenizer read from this node's copy.
    return cfg.tokenizer.name_or_path or local_copy(cfg.model.name_or_path)


def report_chat_data(prepared: PreparedData, seq_len: int, kind: str, unit: str) -> None:
    """What preparation kept and skipped, per split."""
    for split in ("train", "validation"):
        s = prepared.stats[split]
        bad = s["bad_records"]
        log.info(
            f"{kind} {split}: {s['examples']} {unit} -> {s['rows']} rows of "
            f"{seq_len} ({s['response_tokens']} response tokens); skipped "
            f"{bad['bad']} of {bad['records']} records {bad['by_reason'] or ''}".rstrip()
        )


PRETRAIN = Recipe("train", prepare_pretraining)
SFT = Recipe(
    "finetune",
    prepare_instructions,
    base_experiment="pretrain",
    base_command="make train",
    compare_as=("base", "fine-tuned"),
)
DPO = Recipe(
    "dpo",
    prepare_preferences,
    objective="dpo",
    base_experiment="finetune",
    base_command="make finetune",
    compare_as=("before DPO", "after DPO"),
)
RECIPES = {recipe.job: recipe for recipe in (PRETRAIN, SFT, DPO)}
