"""The small path of the pretraining preparation (few read tasks, deduplication in one task
without hash shuffles) against the distributed one (a read task per file, a hash shuffle per
deduplication), forced both ways by data.small_corpus_mib on one corpus: the shards, the
report and everything else beside them must come out byte for byte the same."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from dataprep.prepare import prepare_data
from schemas.data import DataConfig, TokenizerConfig
from schemas.filters import DecontamConfig

pytestmark = pytest.mark.usefixtures("ray_cluster")

BESIDE = ["data_report.png", "duplicates.jsonl", "tokenizer/tokenizer.json"]


def _planted_corpus(root: Path, docs) -> str:
    """Real documents over 8 files, then a second folder (later in corpus order) of 12 exact
    and 12 near copies (one word changed) of long ones, and 4 bad records."""
    texts = list(dict.fromkeys(d.text for d in docs))
    long = [t for t in texts if len(t.split()) >= 100]
    rng = random.Random(0)
    near = []
    for text in long[12:24]:
        words = text.split()
        words[rng.randrange(len(words))] = "CHANGED"
        near.append(" ".join(words))
    for i in range(8):
        (root / "a").mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"text": t}) for t in texts[i::8]]
        (root / "a" / f"part-{i}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "b").mkdir()
    copies = [json.dumps({"text": t}) for t in long[:12] + near]
    bad = ["{not json", "[1, 2]", json.dumps({"title": "no text"})]
    (root / "b" / "copies.jsonl").write_bytes(
        "\n".join(copies + bad).encode() + b'\n{"text": "\xff"}\n'
    )
    return str(root / "[ab]" / "*.jsonl")


def _prepare(paths: str, cache: Path, small_corpus_mib: float):
    data = DataConfig(
        source="text-files",
        paths=[paths],
        validation_fraction=0.2,
        decontam=DecontamConfig(enabled=False),  # row by row either way; it costs seconds
        small_corpus_mib=small_corpus_mib,
    )
    prepared = prepare_data(data, TokenizerConfig(vocab_size=400), 32, str(cache))
    return prepared, Path(prepared.dataset_dir).parent


def test_the_small_and_the_distributed_path_write_the_same_bytes(pydoc_docs, tmp_path):
    paths = _planted_corpus(tmp_path / "corpus", pydoc_docs)
    small, small_dir = _prepare(paths, tmp_path / "small", small_corpus_mib=1024)
    large, large_dir = _prepare(paths, tmp_path / "large", small_corpus_mib=0)
    assert not small.cache_hit and not large.cache_hit
    reports = [json.loads((d / "data_report.json").read_text()) for d in (small_dir, large_dir)]
    # Each really went its own way: one deduplication task, or a shuffle per kind.
    assert (
        "dedup" in reports[0]["stage_seconds"] and "exact_dedup" not in reports[0]["stage_seconds"]
    )
    assert {"exact_dedup", "near_dedup"} <= set(reports[1]["stage_seconds"])
    # ... on a corpus where each part of the report has something to say.
    removed = reports[0]["removed"]
    assert 0 < removed["duplicate"] <= 12 and 0 < removed["near_duplicate"] <= 12  # some fail rules
    assert sum(reports[0]["bad_records"].values()) == 4
    assert small.stats["sequences"]["train"] > 0 and small.stats["sequences"]["validation"] > 0

    for split in ("train", "validation"):
        shards = [sorted((d / "dataset" / split).glob("*.parquet")) for d in (small_dir, large_dir)]
        assert [p.name for p in shards[0]] == [p.name for p in shards[1]] and shards[0]
        for a, b in zip(*shards):
            assert a.read_bytes() == b.read_bytes(), f"{split}/{a.name}"
    for report in reports:
        del report["stage_seconds"]  # wall times: the only part that may differ
    assert reports[0] == reports[1]
    for name in BESIDE:
        assert (small_dir / name).read_bytes() == (large_dir / name).read_bytes(), name
    for stats in (small.stats, large.stats):
        del stats["prepare_s"], stats["data_report"]
    assert small.stats == large.stats
