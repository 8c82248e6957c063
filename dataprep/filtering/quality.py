"""Document quality rules of the kind Gopher and C4 use (schemas/filters.py documents each
threshold and its source). ``quality_failure`` names the first rule a document breaks."""

from __future__ import annotations

import re
from collections import Counter

from schemas.filters import QualityConfig

_WORD = re.compile(r"\S+")
_ELLIPSIS_END = re.compile(r"(\.\.\.|…)\s*$")


def _ngram_char_fractions(words: list[str], n: int) -> tuple[float, float]:
    """(share of word characters inside the most frequent n-gram's occurrences, share of
    word characters covered by n-grams that occur more than once)."""
    total = sum(len(w) for w in words)
    if total == 0 or len(words) < n:
        return 0.0, 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    top, top_count = counts.most_common(1)[0]
    top_fraction = sum(len(w) for w in top) * top_count / total if top_count > 1 else 0.0
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = [True] * n
    dup_fraction = sum(len(w) for w, c in zip(words, covered) if c) / total
    return top_fraction, dup_fraction


def quality_failure(text: str, cfg: QualityConfig) -> str | None:
    """The name of the first rule ``text`` breaks, or None when it passes them all."""
    words = _WORD.findall(text)
    n = len(words)
    if cfg.min_words is not None and n < cfg.min_words:
        return "too_few_words"
    if cfg.max_words is not None and n > cfg.max_words:
        return "too_many_words"
    mean = sum(len(w) for w in words) / n if n else 0.0
    if cfg.min_mean_word_length is not None and mean < cfg.min_mean_word_length:
        return "short_mean_word_length"
    if cfg.max_mean_word_length is not None and mean > cfg.max_mean_word_length:
        return "long_mean_word_length"
    if cfg.max_symbol_word_ratio is not None and n:
        symbols = text.count("#") + text.count("...") + text.count("…")
        if symbols / n > cfg.max_symbol_word_ratio:
            return "symbol_word_ratio"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if cfg.max_duplicate_line_fraction is not None and lines:
        duplicates = len(lines) - len(set(lines))
        if duplicates / len(lines) > cfg.max_duplicate_line_fraction:
            return "duplicate_lines"
    if cfg.max_ellipsis_line_fraction is not None and lines:
        ellipsis = sum(1 for line in lines if _ELLIPSIS_END.search(line))
        if ellipsis / len(lines) > cfg.max_ellipsis_line_fraction:
            return "ellipsis_lines"
    return _repetition_failure([w.lower() for w in words], cfg)


def _repetition_failure(words: list[str], cfg: QualityConfig) -> str | None:
    top, dup = cfg.max_top_ngram_fraction, cfg.max_duplicate_ngram_fraction
    for n in (2, 3, 4) if top is not None else ():
        if _ngram_char_fractions(words, n)[0] > top - 0.02 * (n - 2):
            return "repeated_top_ngram"
    for n in range(5, 11) if dup is not None else ():
        if _ngram_char_fractions(words, n)[1] > max(dup - 0.01 * (n - 5), 0.10):
            return "repeated_ngrams"
    return None
