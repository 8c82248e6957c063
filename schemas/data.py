"""Config sections of data preparation: the pretraining corpus, the tokenizer, and the
instruction (SFT) data. Read by dataprep/ in the driver or a Ray task."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from schemas.fields import at_least, one_of, positive, require, setting
from schemas.filters import DecontamConfig, DedupConfig, QualityConfig

DATA_SOURCES = ("pydoc", "text-files", "hf-dataset")
TOKENIZER_KINDS = ("train-bpe", "pretrained")
SFT_SOURCES = ("stdlib-qa", "translation", "summarization", "jsonl", "hf-dataset")
SFT_FORMATS = ("auto", "messages", "prompt-response", "alpaca", "sharegpt")
PREFERENCE_SOURCES = ("stdlib-pref", "files", "hf-dataset")
TRUNCATIONS = ("left", "right", "drop")
CHAT_ROLES = ("system", "user", "assistant")
# The default cap on one record (a JSONL line, a .txt paragraph, a Parquet row). 8 MiB holds
# any real document with room to spare (a whole long novel is 3 MB of UTF-8), while a reading
# task holds a record a few times over as it decodes it (bytes, str, parsed JSON): tens of
# MiB per task at worst, where a hostile 200 MB line would cost gigabytes.
MAX_RECORD_BYTES = 8 * 2**20
_RECORD_CAP_HELP = (
    "a record (JSONL line, .txt paragraph, Parquet row) over this many bytes is skipped and "
    "counted as too_large, read past in chunks, never held whole"
)


def django_dir() -> Path | None:
    """The installed Django package's folder (sft=translation's catalogs), found without
    importing it; None when it is not installed."""
    spec = importlib.util.find_spec("django")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def django_languages() -> list[str]:
    """The locale folders Django's core catalog exists for (zh_Hans, de, pt_BR...)."""
    root = django_dir()
    if root is None:
        return []
    return sorted(p.parent.parent.name for p in root.glob("conf/locale/*/LC_MESSAGES/django.po"))


def _sharegpt_roles() -> dict[str, str]:
    return {"system": "system", "human": "user", "gpt": "assistant"}


@dataclass
class DataConfig:
    source: str = setting(
        "pydoc",
        "pydoc (the standard library's own docs, read with ast; offline) | text-files "
        "(.txt/.jsonl/.parquet globs, local or in a store) | hf-dataset (any `datasets` source)",
    )
    paths: list[str] = setting(
        factory=list,
        help="text-files: globs of .txt (blank-line separated), .jsonl, .parquet; local, or "
        "all in an object store (s3://bucket/corpus/**/*.txt: each read task fetches its file)",
    )
    text_field: str = setting("text", "jsonl/parquet/hf-dataset column holding the document")
    hf_name: str | None = setting(None, "hf-dataset: hub name (online only) or local directory")
    hf_config: str | None = setting(None, "hf-dataset: configuration name, if it has several")
    hf_split: str = setting("train", "hf-dataset: split to read; validation is held out of it")
    validation_fraction: float = setting(
        0.05, "share of *sources* (files, topic files, 100-row blocks) held out for validation"
    )
    min_chars: int = setting(64, "cleaned documents shorter than this are dropped")
    pii: bool = setting(
        True,
        "mask e-mail addresses, IP addresses and phone numbers as <EMAIL>, <IP_ADDRESS>, <PHONE>",
    )
    quality: QualityConfig = setting(
        factory=QualityConfig, help="document quality rules (Gopher / C4 kind); null = rule off"
    )
    dedup: DedupConfig = setting(factory=DedupConfig, help="exact and near-duplicate removal")
    decontam: DecontamConfig = setting(
        factory=DecontamConfig, help="training documents overlapping evaluation items removed"
    )
    max_documents: int | None = setting(None, "cap on documents read, for quick runs; null = all")
    object_store_mib_per_cpu: int | None = setting(
        256,
        "Ray Data's budget for the preparation's blocks in flight, per CPU of the cluster "
        "(MiB): past it, reading waits for the later stages; null = Ray's default (a share "
        "of the object store, which grows with the machine, not the work)",
    )
    max_bad_fraction: float = setting(
        0.05,
        "text-files: fail when more of the records than this are unreadable (invalid UTF-8 or "
        "JSON, not an object, no text field); fewer are skipped and counted in the stats",
    )
    max_record_bytes: int = setting(MAX_RECORD_BYTES, "text-files: " + _RECORD_CAP_HELP)
    small_corpus_mib: float = setting(
        32.0,
        "input (MiB of corpus files, or of a `datasets` table) up to which the preparation "
        "runs small: few read tasks, deduplication in one task without hash shuffles; the "
        "shards and report are the same either way; 0 = always the distributed path",
    )

    def __post_init__(self) -> None:
        one_of("data.source", self.source, DATA_SOURCES)
        require(
            0.0 < self.validation_fraction < 0.5,
            "data.validation_fraction",
            "must be in (0, 0.5)",
            self.validation_fraction,
        )
        at_least("data.min_chars", self.min_chars, 0)
        positive("data.max_record_bytes", self.max_record_bytes)
        if self.object_store_mib_per_cpu is not None:
            positive("data.object_store_mib_per_cpu", self.object_store_mib_per_cpu)
        require(
            0.0 <= self.max_bad_fraction <= 1.0,
            "data.max_bad_fraction",
            "must be in [0, 1]",
            self.max_bad_fraction,
        )
        at_least("data.small_corpus_mib", self.small_corpus_mib, 0)
        if self.source == "text-files":
            require(bool(self.paths), "data.paths", "at least one glob for data=text-files", [])
        if self.source == "hf-dataset":
            require(
                bool(self.hf_name),
                "data.hf_name",
                "a dataset name or local path for data=hf-dataset",
                self.hf_name,
            )


@dataclass
class TokenizerConfig:
    kind: str = setting(
        "train-bpe",
        "train-bpe (byte-level BPE learned on the training split) | pretrained (used as is)",
    )
    vocab_size: int = setting(4096, "train-bpe: vocabulary size incl. 256 bytes and 2 specials")
    min_frequency: int = setting(2, "train-bpe: merges seen fewer times than this are dropped")
    sample_documents: int = setting(
        200_000,
        "train-bpe: learned from the first this many training documents (corpus order), "
        "streamed to the driver: a bounded, deterministic sample",
    )
    name_or_path: str | None = setting(
        None, "pretrained: a directory or hub id; null = model.name_or_path"
    )

    def __post_init__(self) -> None:
        one_of("tokenizer.kind", self.kind, TOKENIZER_KINDS)
        positive("tokenizer.sample_documents", self.sample_documents)
        require(
            self.vocab_size >= 300,
            "tokenizer.vocab_size",
            "must be >= 300 (256 byte symbols plus merges)",
            self.vocab_size,
        )
        positive("tokenizer.min_frequency", self.min_frequency)


@dataclass
class SFTConfig:
    source: str = setting(
        "stdlib-qa",
        "stdlib-qa (embedded: ~2,000 'What does `json.dumps` do?' pairs from stdlib "
        "docstrings, held out by package) | translation (embedded: ~770 English messages "
        "of Django's .po catalogs and their human translations into sft.target_language, "
        "held out by source string) | summarization (embedded: ~1,300 stdlib docstring "
        "bodies -> their PEP 257 summary line, held out by module) | jsonl | hf-dataset",
    )
    target_language: str = setting(
        "zh_Hans",
        "translation: the Django locale translated into, English -> it (zh_Hans, zh_Hant, "
        "de, fr, ja, pt_BR...: a folder of django/conf/locale)",
    )
    paths: list[str] = setting(
        factory=list, help="jsonl: globs of training .jsonl (or .parquet) files"
    )
    test_paths: list[str] = setting(
        factory=list, help="jsonl: held-out .jsonl/.parquet files; [] = hold out test_fraction"
    )
    hf_name: str | None = setting(None, "hf-dataset: hub name or local dataset directory")
    hf_config: str | None = setting(None, "hf-dataset: configuration name, if it has several")
    hf_split: str = setting("train", "hf-dataset: split to train on")
    hf_test_split: str | None = setting(
        None, "hf-dataset: split to evaluate on; null = hold out test_fraction of hf_split"
    )
    format: str = setting(
        "auto",
        "auto (read off each record's fields) | messages ({role, content} turns) | "
        "prompt-response | alpaca (instruction, input, output, optional system) | sharegpt "
        "(conversations of {from, value}); each becomes the same chat turns",
    )
    messages_field: str = setting(
        "messages", "messages: field with a list of {role, content} turns (system|user|assistant)"
    )
    prompt_field: str = setting("prompt", "prompt-response: the prompt field")
    response_field: str = setting("response", "... and its response (the only tokens with loss)")
    sharegpt_roles: dict[str, str] = setting(
        factory=_sharegpt_roles,
        help="sharegpt: each `from` value -> system | user | assistant; others are bad records",
    )
    test_fraction: float = setting(
        0.1,
        "held out when no test set is given (whole packages for stdlib-qa, source strings "
        "for translation, modules for summarization)",
    )
    truncation: str = setting(
        "left", "examples over trainer.seq_len: left (cut the start) | right | drop"
    )
    packing: bool = setting(
        True, "several examples per row, kept apart by position ids restarting at 0"
    )
    max_bad_fraction: float = setting(0.05, "fail when more of the records than this are bad")
    max_record_bytes: int = setting(MAX_RECORD_BYTES, "jsonl: " + _RECORD_CAP_HELP)
    max_examples: int | None = setting(None, "cap on training examples; null = all")
    pii: bool = setting(
        False,
        "mask e-mail addresses, IP addresses and phone numbers in every turn (off by "
        "default: an answer may be meant to hold one)",
    )
    dedup: bool = setting(
        True,
        "drop examples identical to an earlier one (after cleaning); of a copy on both "
        "sides the training one goes",
    )

    def __post_init__(self) -> None:
        one_of("sft.source", self.source, SFT_SOURCES)
        one_of("sft.format", self.format, SFT_FORMATS)
        one_of("sft.truncation", self.truncation, TRUNCATIONS)
        for speaker, role in self.sharegpt_roles.items():
            one_of(f"sft.sharegpt_roles.{speaker}", role, CHAT_ROLES)
        require(
            0.0 < self.test_fraction < 0.5, "sft.test_fraction", "in (0, 0.5)", self.test_fraction
        )
        require(
            0.0 <= self.max_bad_fraction <= 1.0,
            "sft.max_bad_fraction",
            "in [0, 1]",
            self.max_bad_fraction,
        )
        positive("sft.max_record_bytes", self.max_record_bytes)
        if self.max_examples is not None:
            positive("sft.max_examples", self.max_examples)
        if self.source == "jsonl":
            require(bool(self.paths), "sft.paths", "at least one glob for sft=jsonl", self.paths)
        if self.source == "translation":
            one_of("sft.target_language", self.target_language, tuple(django_languages()))
        if self.source == "hf-dataset":
            require(bool(self.hf_name), "sft.hf_name", "a dataset name or local path", None)


@dataclass
class PreferenceConfig:
    source: str = setting(
        "stdlib-pref",
        "stdlib-pref (embedded: 'What does `mod.func` do?' answered by its own docstring's "
        "first sentence (chosen) and by another function of the same module's (rejected), "
        "held out by package) | files (.jsonl/.parquet globs) | hf-dataset",
    )
    paths: list[str] = setting(factory=list, help="files: globs of training .jsonl/.parquet")
    test_paths: list[str] = setting(
        factory=list, help="files: held-out .jsonl/.parquet files; [] = hold out test_fraction"
    )
    hf_name: str | None = setting(None, "hf-dataset: hub name or local dataset directory")
    hf_config: str | None = setting(None, "hf-dataset: configuration name, if it has several")
    hf_split: str = setting("train", "hf-dataset: split to train on")
    hf_test_split: str | None = setting(
        None, "hf-dataset: split to evaluate on; null = hold out test_fraction of hf_split"
    )
    prompt_field: str = setting(
        "prompt",
        "text or a list of {role, content} turns; absent: the turns chosen and rejected share",
    )
    chosen_field: str = setting(
        "chosen", "the preferred answer: text, or the turns after the prompt (or whole)"
    )
    rejected_field: str = setting("rejected", "the dispreferred answer, in the same form")
    test_fraction: float = setting(
        0.1, "held out when no test set is given (whole packages for stdlib-pref)"
    )
    truncation: str = setting(
        "left", "pairs over trainer.seq_len: left (cut the prompt's start) | right | drop"
    )
    max_bad_fraction: float = setting(0.05, "fail when more of the records than this are bad")
    max_record_bytes: int = setting(MAX_RECORD_BYTES, "files: " + _RECORD_CAP_HELP)
    max_examples: int | None = setting(None, "cap on training pairs; null = all")

    def __post_init__(self) -> None:
        one_of("pref.source", self.source, PREFERENCE_SOURCES)
        one_of("pref.truncation", self.truncation, TRUNCATIONS)
        require(
            0.0 < self.test_fraction < 0.5, "pref.test_fraction", "in (0, 0.5)", self.test_fraction
        )
        require(
            0.0 <= self.max_bad_fraction <= 1.0,
            "pref.max_bad_fraction",
            "in [0, 1]",
            self.max_bad_fraction,
        )
        positive("pref.max_record_bytes", self.max_record_bytes)
        if self.max_examples is not None:
            positive("pref.max_examples", self.max_examples)
        if self.source == "files":
            require(bool(self.paths), "pref.paths", "at least one glob for pref=files", self.paths)
        if self.source == "hf-dataset":
            require(bool(self.hf_name), "pref.hf_name", "a dataset name or local path", None)
