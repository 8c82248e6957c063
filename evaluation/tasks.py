"""What an evaluation runs on: the instruction data's held-out conversations (scored by the
recipe's metric: QA, translation or summarization), translation pairs from a file, and
held-out text in the export's own tokens. Gathered once in the driver, so every export
compared (base and fine-tuned, say) is measured on the same items."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from console import log
from dataprep.bad_records import BadRecords
from dataprep.prepare import prepare_data
from dataprep.readers.chat_formats import iter_examples
from dataprep.readers.files import expand_globs
from dataprep.readers.jsonl import read_jsonl
from dataprep.tokens.fingerprint import tokenizer_fingerprint
from evaluation.text_metrics import (
    bleu_tokenization,
    qa_scores,
    summarization_scores,
    translation_scores,
)
from schemas.data import DataConfig, SFTConfig, TokenizerConfig
from schemas.evaluation import EvalConfig
from schemas.fields import ConfigError


@dataclass
class TaskItem:
    messages: list[dict]  # the conversation up to the answer
    reference: str


@dataclass
class EvalTask:
    name: str  # the report's section: qa | translation | summarization
    items: list[TaskItem]
    # (predictions, references) -> metrics; a module-level function or a partial of one,
    # so that the task travels to the Ray task that evaluates
    score: Callable[[list[str], list[str]], dict]


def sft_task(sft: SFTConfig, limit: int) -> EvalTask:
    """The held-out conversations of the instruction data, scored by the recipe's metric:
    BLEU and chrF for sft=translation, ROUGE for sft=summarization, EM/F1 otherwise."""
    items = qa_items(sft, limit)
    if sft.source == "translation":
        tokenize = bleu_tokenization(sft.target_language)
        return EvalTask("translation", items, partial(translation_scores, tokenize=tokenize))
    if sft.source == "summarization":
        return EvalTask("summarization", items, summarization_scores)
    return EvalTask("qa", items, qa_scores)


def file_translation_task(spec: EvalConfig) -> EvalTask | None:
    """eval.translation_paths' pairs, scored by BLEU (13a) and chrF; None without files."""
    if not spec.translation_paths:
        return None
    return EvalTask("translation", translation_items(spec), translation_scores)


def qa_items(sft: SFTConfig, limit: int) -> list[TaskItem]:
    """The held-out split's first ``limit`` conversations, cut before their last answer."""
    items = []
    for _, messages in iter_examples(sft, "test", BadRecords()):
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        items.append(TaskItem(messages[:last], messages[last]["content"]))
        if len(items) >= limit:
            break
    return items


def translation_items(spec: EvalConfig, bad: BadRecords | None = None) -> list[TaskItem]:
    """source/target JSONL: the source is the user turn, the target the reference. A line
    that is not a readable JSON object (invalid, nested too deep, over the record cap) is
    counted in ``bad`` and skipped, as the training readers do; a file with none left is
    refused."""
    bad = bad if bad is not None else BadRecords()
    items = []
    for path in expand_globs(spec.translation_paths, "eval.translation_paths", ".jsonl"):
        for line_no, row, problem in read_jsonl(path):
            bad.seen += 1
            if row is None:
                bad.add(problem, f"{path}:{line_no}")
                continue
            if spec.source_field not in row or spec.target_field not in row:
                raise ConfigError(
                    f"eval.translation_paths: {path}:{line_no} lacks "
                    f"{spec.source_field!r}/{spec.target_field!r} (eval.source_field, "
                    "eval.target_field name them)"
                )
            user = {"role": "user", "content": row[spec.source_field]}
            items.append(TaskItem([user], row[spec.target_field]))
    if bad.counts:
        log.info(f"eval: skipped translation lines: {bad.describe()}")
        if not items:
            raise ConfigError(
                f"eval.translation_paths: no readable line ({bad.describe()}); "
                "allowed: one JSON object per line"
            )
    return items[: spec.max_examples]


def text_dataset(export: str, data: DataConfig, spec: EvalConfig, store: str) -> str:
    """Held-out text (the data config's validation split) in the export's own tokens,
    cached by what its tokenizer tokenizes: exports that share one (a base and its
    fine-tunes) share the shards."""
    tokenizer = TokenizerConfig(kind="pretrained", name_or_path=export)
    key = tokenizer_fingerprint(export)
    key = f"tokenizer-content-{key}" if key else None
    return prepare_data(data, tokenizer, spec.seq_len, store, export, key).dataset_dir
