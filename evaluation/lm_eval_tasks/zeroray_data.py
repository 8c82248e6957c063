"""The datasets of zeroray's own lm-evaluation-harness tasks (the YAML files beside this one),
built from what ships with zeroray and with Python itself, so they run with no hub access.

lm-eval imports this file by path (`!function zeroray_data.<name>` in a task's YAML) and
calls the dataset builders with the task's metadata as keyword arguments.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets

from dataprep.held_out import is_held_out
from dataprep.readers.documents import pydoc_corpus
from dataprep.readers.embedded.summarization import stdlib_summary_pairs
from dataprep.readers.embedded.translation import translation_pairs
from dataprep.readers.stdlib_qa import stdlib_qa_pairs
from evaluation.text_metrics import bleu_tokenization, summarization_scores, translation_scores

CHOICES = 4
QA_TEST_FRACTION = 0.1  # sft.test_fraction's default: the recipes' own held-out groups
TEXT_VALIDATION_FRACTION = 0.05  # data.validation_fraction's default: pretraining never saw these
MAX_DOCUMENTS = 64
MIN_DOCUMENT_CHARS = 200


def _held_out_pairs() -> list[dict]:
    """The held-out packages' pairs (the others are never parsed)."""
    return list(stdlib_qa_pairs(keep_group=lambda group: is_held_out(group, QA_TEST_FRACTION)))


def docstring_questions(**_) -> dict:
    rows = [{"question": p["prompt"], "answer": p["response"]} for p in _held_out_pairs()]
    return {"test": datasets.Dataset.from_list(rows)}


def docstring_choices(**_) -> dict:
    """Each held-out question with its own answer and three of other names of its package,
    in an order fixed by a seed per question."""
    by_group: dict[str, list[dict]] = {}
    for pair in _held_out_pairs():
        by_group.setdefault(pair["group"], []).append(pair)
    rows = []
    for pairs in by_group.values():
        answers = list(dict.fromkeys(p["response"] for p in pairs))
        if len(answers) < CHOICES:
            continue
        for i, pair in enumerate(pairs):
            others = [a for a in answers[i + 1 :] + answers[:i] if a != pair["response"]]
            choices = [pair["response"], *others[: CHOICES - 1]]
            random.Random(pair["prompt"]).shuffle(choices)
            rows.append(
                {
                    "question": pair["prompt"],
                    "choices": choices,
                    "label": choices.index(pair["response"]),
                }
            )
    return {"test": datasets.Dataset.from_list(rows)}


def held_out_documents(**_) -> dict:
    """Documents of the embedded corpus from the sources pretraining holds out."""
    rows = []
    for doc in pydoc_corpus():
        if len(doc.text) >= MIN_DOCUMENT_CHARS and is_held_out(
            doc.source, TEXT_VALIDATION_FRACTION
        ):
            rows.append({"source": doc.source, "text": doc.text})
            if len(rows) == MAX_DOCUMENTS:
                break
    return {"test": datasets.Dataset.from_list(rows)}


def bias_pairs(**_) -> dict:
    path = Path(__file__).with_name("bias_pairs.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {"test": datasets.Dataset.from_list(rows)}


def bias_choices(doc: dict) -> list[str]:
    return [doc["sent_more"], doc["sent_less"]]


def stereotype_preference(doc: dict, results: list) -> dict:
    """CrowS-Pairs' scoring: which of the two sentences the model finds more likely."""
    (stereotyped, _), (other, _) = results
    return {
        "likelihood_diff": abs(stereotyped - other),
        "pct_stereotype": 1.0 if stereotyped > other else 0.0,
    }


def _held_out_recipe_rows(pairs) -> list[dict]:
    return [
        {"prompt": p["prompt"], "reference": p["response"]}
        for p in pairs
        if is_held_out(p["group"], QA_TEST_FRACTION)
    ]


def translation_held_out(**_) -> dict:
    """sft=translation's held-out messages (English -> zh_Hans, its default language)."""
    return {"test": datasets.Dataset.from_list(_held_out_recipe_rows(translation_pairs()))}


def summarization_held_out(**_) -> dict:
    """sft=summarization's held-out docstrings (whole modules)."""
    rows = _held_out_recipe_rows(stdlib_summary_pairs())
    return {"test": datasets.Dataset.from_list(rows)}


def _reference_and_output(doc: dict, results: list, metrics: tuple[str, ...]) -> dict:
    """Per document, (reference, output) under each metric's name: the corpus metrics are
    computed over all of them at once by the aggregations below."""
    pair = (doc["reference"], results[0].strip())
    return dict.fromkeys(metrics, pair)


def translation_result(doc: dict, results: list) -> dict:
    return _reference_and_output(doc, results, ("bleu", "chrf"))


def summarization_result(doc: dict, results: list) -> dict:
    return _reference_and_output(doc, results, ("rouge1", "rouge2", "rougeL"))


def _split(items: list) -> tuple[list[str], list[str]]:
    references, outputs = zip(*items)
    return list(outputs), list(references)


# The aggregations call the functions `make finetune` and `make eval` score with, so the
# figures are the same given the same outputs.
def corpus_bleu_zh(items: list) -> float:
    return translation_scores(*_split(items), tokenize=bleu_tokenization("zh_Hans"))["bleu"]


def corpus_chrf(items: list) -> float:
    return translation_scores(*_split(items))["chrf"]


def rouge1(items: list) -> float:
    return summarization_scores(*_split(items))["rouge1"]


def rouge2(items: list) -> float:
    return summarization_scores(*_split(items))["rouge2"]


def rougeL(items: list) -> float:  # noqa: N802 (rouge-score's name for it)
    return summarization_scores(*_split(items))["rougeL"]
