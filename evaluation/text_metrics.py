"""Task metrics on generated text: SQuAD-style exact match and token F1, BLEU and chrF,
ROUGE-1/2/L.

The QA normalisation is the one SQuAD's official script applies (lower-case, drop
punctuation and the articles a/an/the, collapse whitespace), so figures compare with
published ones. BLEU and chrF are sacrebleu's corpus scores; ROUGE is rouge-score's
(Google's reimplementation of the original Perl script), stemming on, its F-measures
averaged over the examples as the summarization papers report them.
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


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def bleu_tokenization(language: str) -> str:
    """sacrebleu's tokenizer for a target language: its `zh` one for Chinese (a word per
    character), characters for Japanese and Korean (their own need MeCab), else `13a`
    (the WMT default)."""
    code = language.lower().split("_")[0].split("-")[0]
    return {"zh": "zh", "ja": "char", "ko": "char"}.get(code, "13a")


def translation_scores(
    predictions: list[str], references: list[str], tokenize: str = "13a"
) -> dict:
    """Corpus BLEU (with sacrebleu's ``tokenize``) and chrF, one reference per example."""
    import sacrebleu

    return {
        "bleu": sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score,
        "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
        "tokenize": tokenize,
        "examples": len(references),
    }


def summarization_scores(predictions: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1/2/L F-measures in percent (rouge-score, Porter stemming on)."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # (target, prediction), in that order
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    n = len(references)
    return {**{k: 100 * v / n for k, v in totals.items()}, "examples": n}
