"""Config sections of corpus filtering (dataprep/formatters/, filters/, dedup/): PII masking,
document quality rules, near-duplicate removal and decontamination against evaluation data.
Every rule has a documented default and a switch: null turns a rule off."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.fields import at_least, one_of, positive, require, setting

# The fine-tuning recipes with an embedded held-out set (conf/sft/).
DECONTAM_RECIPES = ("stdlib-qa", "translation", "summarization")


def _default_decontam_recipes() -> list[str]:
    return ["stdlib-qa", "translation"]


@dataclass
class QualityConfig:
    """Document rules of the kind Gopher (Rae et al. 2021, appendix A) and C4 apply; a
    document failing any is dropped and counted under the rule's name."""

    min_words: int | None = setting(
        50, "fewer words than this: dropped (Gopher: 50); null = no lower bound"
    )
    max_words: int | None = setting(
        100_000, "more words than this: dropped (Gopher: 100,000); null = no upper bound"
    )
    min_mean_word_length: float | None = setting(
        3.0, "mean characters per word below this: dropped (Gopher: 3); null = off"
    )
    max_mean_word_length: float | None = setting(
        10.0, "mean characters per word above this: dropped (Gopher: 10); null = off"
    )
    max_symbol_word_ratio: float | None = setting(
        0.1, "('#' + '...' + '…') per word above this: dropped (Gopher: 0.1); null = off"
    )
    max_duplicate_line_fraction: float | None = setting(
        0.3, "share of non-empty lines that repeat an earlier line (Gopher: 0.3); null = off"
    )
    max_ellipsis_line_fraction: float | None = setting(
        0.3, "share of lines ending with '...' or '…' (Gopher: 0.3); null = off"
    )
    max_top_ngram_fraction: float | None = setting(
        0.2,
        "share of characters inside the most frequent word 2-gram (Gopher: 0.20; its 3- and "
        "4-gram limits, 0.18 and 0.16, follow as this minus 0.02 per extra word); null = off",
    )
    max_duplicate_ngram_fraction: float | None = setting(
        0.15,
        "share of characters inside word 5-grams that occur more than once (Gopher: 0.15; "
        "6- to 10-grams get this minus 0.01 per extra word, down to 0.10); null = off",
    )

    def __post_init__(self) -> None:
        for key in ("min_words", "max_words", "min_mean_word_length", "max_mean_word_length"):
            value = getattr(self, key)
            if value is not None:
                positive(f"data.quality.{key}", value)
        for key in (
            "max_symbol_word_ratio",
            "max_duplicate_line_fraction",
            "max_ellipsis_line_fraction",
            "max_top_ngram_fraction",
            "max_duplicate_ngram_fraction",
        ):
            value = getattr(self, key)
            if value is not None:
                require(0 <= value <= 1, f"data.quality.{key}", "in [0, 1], or null", value)


@dataclass
class DedupConfig:
    exact: bool = setting(
        True, "drop documents whose cleaned text equals an earlier one's, across the corpus"
    )
    near: bool = setting(True, "drop near-duplicates: MinHash LSH over word shingles (datasketch)")
    threshold: float = setting(
        0.8, "near: estimated Jaccard similarity of shingle sets at or above which one goes"
    )
    num_perm: int = setting(128, "near: MinHash permutations (signature length)")
    bands: int | None = setting(
        None,
        "near: LSH bands (rows per band = num_perm / bands); null = the split datasketch "
        "finds best for the threshold",
    )
    shingle_words: int = setting(5, "near: words per shingle")

    def __post_init__(self) -> None:
        require(0 < self.threshold <= 1, "data.dedup.threshold", "in (0, 1]", self.threshold)
        positive("data.dedup.num_perm", self.num_perm)
        positive("data.dedup.shingle_words", self.shingle_words)
        if self.bands is not None:
            require(
                self.bands > 0 and self.num_perm % self.bands == 0,
                "data.dedup.bands",
                f"a divisor of data.dedup.num_perm={self.num_perm}, or null",
                self.bands,
            )


@dataclass
class DecontamConfig:
    """Training documents that share a long word n-gram with an evaluation item are removed
    before training (GPT-3's 13-gram overlap test), counted, and listed in the report."""

    enabled: bool = setting(True, "remove training documents that overlap evaluation items")
    ngram: int = setting(13, "words in the overlapping n-gram (GPT-3: 13)")
    min_item_words: int = setting(
        8,
        "evaluation items shorter than ngram words are matched whole if they have at least "
        "this many words; shorter ones are ignored (too common to mean contamination)",
    )
    shipped: bool = setting(
        True,
        "include zeroray's own evaluation data: the held-out QA answers and questions, and "
        "the texts of the shipped lm-eval tasks",
    )
    recipes: list[str] = setting(
        factory=_default_decontam_recipes,
        help="with shipped: the fine-tuning recipes whose held-out items count: stdlib-qa, "
        "translation (the zh_Hans messages; none is in the embedded corpus), summarization "
        "(held-out modules' docstrings: the embedded corpus holds them, so adding it removes "
        "~120 documents; add it to pretrain a base for sft=summarization that never saw them)",
    )
    paths: list[str] = setting(
        factory=list,
        help="more evaluation files (globs of .jsonl, whose string fields are items, or .txt, "
        "one item per line)",
    )

    def __post_init__(self) -> None:
        for recipe in self.recipes:
            one_of("data.decontam.recipes", recipe, DECONTAM_RECIPES)
        positive("data.decontam.ngram", self.ngram)
        at_least("data.decontam.min_item_words", self.min_item_words, 1)
