"""Task metrics on generated text: SQuAD-style exact match and token F1, BLEU and chrF.

The QA normalisation is the one SQuAD's official script applies (lower-case, drop
punctuation and the articles a/an/the, collapse whitespace), so figures compare with
published ones. BLEU and chrF are sacrebleu's corpus scores.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty: a match; one empty: nothing in common
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def qa_scores(predictions: list[str], references: list[str]) -> dict:
    """Mean exact match and token F1, in percent like SQuAD reports them."""
    n = len(references)
    return {
        "exact_match": 100 * sum(map(exact_match, predictions, references)) / n,
        "f1": 100 * sum(map(token_f1, predictions, references)) / n,
        "examples": n,
    }


def translation_scores(predictions: list[str], references: list[str]) -> dict:
    import sacrebleu

    return {
        "bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
        "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
        "examples": len(references),
    }
