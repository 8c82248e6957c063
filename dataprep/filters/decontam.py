"""Decontamination: training documents that share a long word n-gram with an evaluation
item are removed before training (the 13-gram overlap test of GPT-3's paper, section 4).

Items are the held-out pairs of the embedded fine-tuning recipes (data.decontam.recipes:
QA questions' answers, first sentences of docstrings the pretraining corpus holds as prose;
English messages and their translations; docstring bodies and their summary lines), the
shipped lm-eval tasks' texts, and files the user names. An item shorter than the n-gram is
matched whole when it has at least ``min_item_words`` words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

from dataprep.held_out import is_held_out
from dataprep.readers.embedded.summarization import stdlib_summary_pairs
from dataprep.readers.embedded.translation import translation_pairs
from dataprep.readers.files import expand_globs
from dataprep.readers.jsonl import read_jsonl
from dataprep.readers.stdlib_qa import stdlib_qa_pairs
from schemas.data import SFTConfig
from schemas.fields import ConfigError
from schemas.filters import DecontamConfig

SHIPPED_TASK_FILES = [
    Path(__file__).resolve().parents[2] / "evaluation/lm_eval_tasks/bias_pairs.jsonl"
]
_WORD_CHARS = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word characters only: punctuation and spacing do not hide an overlap."""
    return _WORD_CHARS.findall(text.lower())


def _qa_test_fraction() -> float:
    return next(f.default for f in fields(SFTConfig) if f.name == "test_fraction")


def _sft_default(name: str):
    return next(f.default for f in fields(SFTConfig) if f.name == name)


# recipe -> its embedded pairs (of sft.target_language's default, for translation), given
# the held-out rule of their groups: the QA pairs read only the held-out packages' modules
# (parsing every module was 2.7 of the 3.0 s this index took to build, before any
# document could be read).
RECIPE_PAIRS = {
    "stdlib-qa": lambda held_out: stdlib_qa_pairs(keep_group=held_out),
    "translation": lambda held_out: translation_pairs(_sft_default("target_language")),
    "summarization": lambda held_out: stdlib_summary_pairs(),
}


def shipped_items(recipes: list[str] = ("stdlib-qa",)) -> Iterator[tuple[str, str]]:
    """(where, text) of zeroray's own evaluation data: the held-out answers of ``recipes``
    (and their questions: a QA question, the English message, the docstring body), then
    the shipped lm-eval tasks' files."""
    fraction = _qa_test_fraction()

    def held_out(group: str) -> bool:
        return is_held_out(group, fraction)

    for recipe in recipes:
        for pair in RECIPE_PAIRS[recipe](held_out):
            if held_out(pair["group"]):
                where = f"{recipe} test: {pair['prompt'][:80]}"
                yield where, pair["response"]
                if "source" in pair:  # the text translated or summarized
                    yield where, pair["source"]
    for path in SHIPPED_TASK_FILES:
        yield from _file_items(path)


def _file_items(path: Path) -> Iterator[tuple[str, str]]:
    """(where, text) of every string field of a JSONL file's objects, or of every line of a
    text file."""
    if path.suffix == ".jsonl":
        for line_no, record, problem in read_jsonl(path):
            if problem == "not_an_object":
                continue
            if record is None:
                raise ConfigError(
                    f"data.decontam.paths: {path}:{line_no} is {problem.replace('_', ' ')} "
                    "(allowed: JSON objects, one per line)"
                )
            for value in record.values():
                if isinstance(value, str):
                    yield f"{path.name}:{line_no}", value
    else:
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                yield f"{path.name}:{line_no}", line


class EvalOverlap:
    """The n-grams of every evaluation item, indexed by their first ``prefix`` words
    (``prefix``: the shortest n-gram kept), so that ``match`` reads a document's windows
    of one length only and checks the few candidates they point at in full."""

    def __init__(self, cfg: DecontamConfig):
        self.cfg = cfg
        self.prefix = max(1, min(cfg.ngram, cfg.min_item_words))
        # first `prefix` words -> [(whole n-gram, item location)]
        self.grams: dict[tuple[str, ...], list[tuple[tuple[str, ...], str]]] = {}
        self.items = 0
        sources = list(shipped_items(cfg.recipes)) if cfg.shipped else []
        for path in expand_globs(cfg.paths, "data.decontam.paths", ".jsonl or .txt"):
            sources.extend(_file_items(path))
        for where, text in sources:
            self.add(where, text)

    def add(self, where: str, text: str) -> None:
        item = words(text)
        n = min(self.cfg.ngram, len(item))
        if n < self.cfg.min_item_words:
            return
        self.items += 1
        seen = set()
        for i in range(len(item) - n + 1):
            gram = tuple(item[i : i + n])
            if gram not in seen:
                seen.add(gram)
                self.grams.setdefault(gram[: self.prefix], []).append((gram, where))

    def match(self, text: str) -> tuple[str, str] | None:
        """(the evaluation item's location, the shared words) of the first overlap."""
        doc = words(text)
        windows = zip(*(doc[i:] for i in range(self.prefix)))
        for i, head in enumerate(windows):
            for gram, where in self.grams.get(head, ()):
                if tuple(doc[i : i + len(gram)]) == gram:
                    return where, " ".join(gram)
        return None
