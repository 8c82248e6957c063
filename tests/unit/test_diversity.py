"""evaluation/diversity.py: each metric from its definition on texts whose answer is known,
and a two-setting sweep on the tiny export where greedy must come out less diverse and
likelier (lower perplexity) than hot sampling."""

from __future__ import annotations

import json

import pytest

from evaluation.diversity import distinct_n, main, repetition_rate, self_bleu, sweep


def test_distinct_n_counts_unique_ngrams_over_all():
    samples = [[1, 2, 1, 2], [1, 3]]
    assert distinct_n(samples, 1) == pytest.approx(3 / 6)  # 1 2 3 of 1 2 1 2 1 3
    assert distinct_n(samples, 2) == pytest.approx(3 / 4)  # 12 21 12 13
    assert distinct_n([[7]], 2) == 0.0


def test_repetition_rate_is_the_share_of_bigrams_seen_before():
    assert repetition_rate([5, 6, 5, 6, 5, 6]) == pytest.approx(1 - 2 / 5)
    assert repetition_rate([1, 2, 3, 4]) == 0.0
    assert repetition_rate([9] * 11) == pytest.approx(0.9)  # a loop of one token


def test_self_bleu_is_100_for_copies_and_low_for_unrelated_samples():
    same = ["the quick brown fox jumps over the lazy dog"] * 3
    assert self_bleu([same]) == pytest.approx(100.0)
    unrelated = [["the quick brown fox jumps", "never odd or even now", "zip zap zoom out loud"]]
    assert self_bleu(unrelated) < 10


def test_greedy_is_less_diverse_and_likelier_than_hot_sampling(gen):
    settings = {"greedy": dict(temperature=0.0), "hot": dict(temperature=1.5)}
    greedy, hot = sweep(gen, ["The list of", "Return"], samples=3, max_tokens=8, settings=settings)
    assert greedy.samples == hot.samples == 6
    assert greedy.distinct_2 < hot.distinct_2
    # Greedy's three samples of a prompt are one sample three times: at most a third of
    # its bigrams are new.
    assert greedy.distinct_2 <= 1 / 3 + 1e-9
    assert greedy.self_bleu > hot.self_bleu
    assert greedy.perplexity < hot.perplexity


def test_the_command_writes_the_table_and_the_picture(export_dir, tmp_path, capsys):
    argv = [export_dir, "--out", str(tmp_path), "--samples", "2", "--max-tokens", "4"]
    assert main([*argv, "--prompts", "The"]) == 0
    report = json.loads((tmp_path / "diversity.json").read_text())
    assert [r["setting"] for r in report["results"]] == list(report["settings"])
    assert (tmp_path / "diversity.png").stat().st_size > 10_000
    assert "| greedy |" in capsys.readouterr().out
