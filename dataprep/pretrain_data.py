"""Data preparation: read -> clean and filter -> split -> decontaminate the training split ->
train tokenizer -> tokenize + pack, cached, with a data report beside the result.

The result is a directory keyed by a hash of every input and setting, written under a
temporary name and renamed when complete, so a second run with the same inputs skips all
of it and a crashed run never leaves a half-written cache behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import datasets

from dataprep.bad_records import BadRecords
from dataprep.corpus import Document, input_fingerprint, load_documents
from dataprep.filtering.corpus_filter import CorpusFilter
from dataprep.filtering.report import build_report, report_table, write_report
from dataprep.packing import tokenize_and_pack
from dataprep.records import is_validation_source
from dataprep.tokenizer import load_pretrained_tokenizer, train_bpe_tokenizer
from schemas.data import DataConfig, TokenizerConfig
from schemas.fields import ConfigError

# Bump when the preparation code changes what it writes, to invalidate old caches.
PREPARE_VERSION = 3  # 3: PII, quality, near-dup and decontamination filters


@dataclass
class PreparedData:
    dataset_dir: str  # DatasetDict with "train" and "validation", column input_ids
    tokenizer_dir: str
    stats: dict
    cache_hit: bool


def cache_key(
    data: DataConfig, tokenizer: TokenizerConfig, seq_len: int, model_path: str | None
) -> str:
    payload = {
        "version": PREPARE_VERSION,
        "data": dataclasses.asdict(data),
        "tokenizer": dataclasses.asdict(tokenizer),
        "tokenizer_source": tokenizer.name_or_path or model_path,
        "seq_len": seq_len,
        "inputs": input_fingerprint(data),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def split_documents(docs: list[Document], fraction: float) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_validation_source(d.source, fraction)]
    val = [d for d in docs if is_validation_source(d.source, fraction)]
    if not val or not train:
        # Too few sources to split by source (one file, say): hold out every n-th document.
        step = max(2, round(1 / fraction))
        train = [d for i, d in enumerate(docs) if i % step]
        val = [d for i, d in enumerate(docs) if not i % step]
    return train, val


def prepare_data(
    data: DataConfig,
    tokenizer_cfg: TokenizerConfig,
    seq_len: int,
    cache_dir: str,
    model_path: str | None = None,
) -> PreparedData:
    key = cache_key(data, tokenizer_cfg, seq_len, model_path)
    final = Path(cache_dir) / f"data-{key}"
    if (final / "stats.json").exists():
        stats = json.loads((final / "stats.json").read_text())
        return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, True)

    started = time.perf_counter()
    bad = BadRecords()
    filters = CorpusFilter(data)
    docs = list(filters.run(load_documents(data, bad)))
    counts = filters.counts
    if bad.counts:
        print(f"[zeroray] data: skipped {sum(bad.counts.values())} bad records: {bad.describe()}")
    bad.check(data.max_bad_fraction, "input", "data.max_bad_fraction")
    if not docs:
        raise ConfigError(
            f"data: the corpus is empty after cleaning ({dict(counts)}); "
            f"allowed: sources with documents of at least data.min_chars="
            f"{data.min_chars} characters"
        )
    train_docs, val_docs = split_documents(docs, data.validation_fraction)
    train_docs = filters.decontaminate(train_docs)  # evaluation overlap: training only
    filters.count_kept(train_docs + val_docs)
    train_texts, val_texts = [d.text for d in train_docs], [d.text for d in val_docs]

    if tokenizer_cfg.kind == "train-bpe":
        tokenizer = train_bpe_tokenizer(
            train_texts,
            tokenizer_cfg.vocab_size,
            tokenizer_cfg.min_frequency,
            length=len(train_texts),
        )
    else:
        tokenizer = load_pretrained_tokenizer(tokenizer_cfg.name_or_path or model_path)

    splits = {}
    for name, texts in (("train", train_texts), ("validation", val_texts)):
        splits[name] = tokenize_and_pack(
            datasets.Dataset.from_dict({"text": texts}), tokenizer, seq_len, desc=name
        )
        if len(splits[name]) == 0:
            raise ConfigError(
                f"trainer.seq_len={seq_len}: the {name} split holds fewer tokens "
                "than one sequence; allowed: a smaller seq_len or more data"
            )

    tmp = Path(cache_dir) / f".data-{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.DatasetDict(splits).save_to_disk(str(tmp / "dataset"))
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    stats = {
        "cleaning": dict(counts),
        "bad_records": bad.summary(),
        "documents": {"train": len(train_texts), "validation": len(val_texts)},
        "sequences": {k: len(v) for k, v in splits.items()},
        "tokens": {k: len(v) * seq_len for k, v in splits.items()},
        "vocab_size": len(tokenizer),
        "seq_len": seq_len,
        "prepare_s": round(time.perf_counter() - started, 2),
    }
    report = build_report(filters, stats)
    stats["data_report"] = str(final / "data_report.json")
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    write_report(report, tmp)
    print(report_table(report), flush=True)
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same key first; theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, False)
