"""Document quality rules of the kind Gopher and C4 use (schemas/filters.py documents each
threshold and its source). ``quality_failure`` names the first rule a document breaks."""

from __future__ import annotations

import re

import numpy as np

from schemas.filters import QualityConfig

_WORD = re.compile(r"\S+")
_ELLIPSIS_END = re.compile(r"(\.\.\.|…)\s*$")


class _NGrams:
    """The word n-grams of one document for n = 1, 2, ... in turn, as exact integer codes
    (n-gram i's code is its rank among the document's distinct n-grams), computed with numpy
    from the (n-1)-gram codes: the repetition rules look at nine n-gram sizes per document
    and Python tuples of words cost ~4x as much (measured on the synthetic bench corpus)."""

    def __init__(self, words: list[str]):
        last = {w: i for i, w in enumerate(words)}  # a word's last position: its code, < len
        self.words = np.array(list(map(last.__getitem__, words)), np.int64)
        self.codes = self.words
        lengths = np.array(list(map(len, words)), np.int64)
        self.chars = np.concatenate([[0], np.cumsum(lengths)])  # chars of words [i, j)
        self.total = int(self.chars[-1])
        self.n = 1

    def advance(self) -> np.ndarray:
        """Moves on to the next n; the number of times each n-gram position's gram occurs."""
        self.n += 1
        words = len(self.chars) - 1
        pairs = self.codes[:-1] * words + self.words[self.n - 1 :]  # < words**2: exact
        _, self.codes, counts = np.unique(pairs, return_inverse=True, return_counts=True)
        return counts[self.codes]


def _top_fraction(grams: _NGrams, occurs: np.ndarray) -> float:
    """Share of word characters inside the most frequent n-gram's occurrences (the first
    such n-gram in the document when several tie)."""
    top = int(occurs.max())
    if top < 2:
        return 0.0
    i = int(np.argmax(occurs == top))
    return float(grams.chars[i + grams.n] - grams.chars[i]) * top / grams.total


def _duplicate_fraction(grams: _NGrams, occurs: np.ndarray) -> float:
    """Share of word characters covered by n-grams that occur more than once."""
    starts = np.flatnonzero(occurs > 1)
    if not len(starts):
        return 0.0
    size = len(grams.chars)
    edges = np.bincount(starts, minlength=size) - np.bincount(starts + grams.n, minlength=size)
    covered = np.cumsum(edges)[: size - 1] > 0
    lengths = np.diff(grams.chars)
    return float(lengths[covered].sum()) / grams.total


def quality_failure(text: str, cfg: QualityConfig) -> str | None:
    """The name of the first rule ``text`` breaks, or None when it passes them all."""
    words = _WORD.findall(text)
    n = len(words)
    if cfg.min_words is not None and n < cfg.min_words:
        return "too_few_words"
    if cfg.max_words is not None and n > cfg.max_words:
        return "too_many_words"
    mean = sum(map(len, words)) / n if n else 0.0
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
    return _repetition_failure(list(map(str.lower, words)), cfg)


def _repetition_failure(words: list[str], cfg: QualityConfig) -> str | None:
    top, dup = cfg.max_top_ngram_fraction, cfg.max_duplicate_ngram_fraction
    if (top is None and dup is None) or len(words) < 2:
        return None
    grams = _NGrams(words)
    if grams.total == 0:
        return None
    for n in range(2, 11):
        if n > len(words):
            return None
        occurs = grams.advance()
        if n <= 4 and top is not None and _top_fraction(grams, occurs) > top - 0.02 * (n - 2):
            return "repeated_top_ngram"
        if n >= 5 and dup is not None:
            if _duplicate_fraction(grams, occurs) > max(dup - 0.01 * (n - 5), 0.10):
                return "repeated_ngrams"
    return None
