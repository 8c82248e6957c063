"""QA and translation metrics against cases worked out by hand."""

from __future__ import annotations

import pytest

from evaluation.text_metrics import (
    exact_match,
    normalize_answer,
    qa_scores,
    token_f1,
    translation_scores,
)


def test_squad_normalisation():
    assert normalize_answer("The  Cat, sat on a MAT!") == "cat sat on mat"
    assert normalize_answer("An apple.") == "apple"


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match("The sum of a and b.", "sum of and b") == 1.0
    assert exact_match("sum of a and c", "sum of a and b") == 0.0


def test_token_f1_by_hand():
    # pred "return sorted list" vs ref "return new sorted list of items":
    # common 3, precision 3/3, recall 3/6 -> F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    assert token_f1("Return the sorted list.", "Return a new sorted list of items") == (
        pytest.approx(2 / 3)
    )
    # Repeated tokens match at most as often as in both: "x x y" vs "x y y" -> common 2
    # (one x, one y): P = R = 2/3 -> F1 = 2/3.
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("nothing shared", "other words") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "word") == 0.0


def test_qa_scores_are_means_in_percent():
    scores = qa_scores(["Return x.", "wrong"], ["return x", "right answer"])
    assert scores == {"exact_match": 50.0, "f1": 50.0, "examples": 2}


def test_translation_scores_use_sacrebleu():
    perfect = translation_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    # Against the reference: unigrams 5/6, bigrams 3/5, trigrams 2/4, 4-grams 1/3 match and
    # the lengths are equal (no brevity penalty): BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** 0.25.
    partial = translation_scores(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert partial["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert 0 < partial["chrf"] < 100 and partial["examples"] == 1
