"""The Ray Data preparation pipeline on a real local Ray cluster: cached Parquet shards,
byte-identical on a rerun; exact and near duplicates removed across files and blocks; bad
records counted with their locations; the data report. (On two nodes:
two_nodes/test_bucket_job.py.)"""

from __future__ import annotations

import dataclasses
import glob
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from dataprep.prepare import prepare_data
from schemas.data import DataConfig, TokenizerConfig
from schemas.fields import ConfigError
from schemas.filters import DecontamConfig, QualityConfig

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _prepare(paths: str, cache: Path, seq_len: int = 32, **data):
    cfg = DataConfig(source="text-files", paths=[paths], validation_fraction=0.2, **data)
    return prepare_data(cfg, TokenizerConfig(vocab_size=400), seq_len, str(cache))


def _shards(dataset_dir: str, split: str) -> list[Path]:
    return sorted((Path(dataset_dir) / split).glob("*.parquet"))


def _rows(dataset_dir: str, split: str) -> list[list[int]]:
    return [
        r for f in _shards(dataset_dir, split) for r in pq.read_table(f)["input_ids"].to_pylist()
    ]


def test_prepare_data_is_cached_and_byte_identical_on_a_rerun(text_corpus, tmp_path):
    cache = tmp_path / "cache"
    first = _prepare(text_corpus, cache)
    assert first.cache_hit is False
    stats = first.stats
    assert stats["cleaning"]["kept"] > 0
    assert stats["vocab_size"] == 400 and stats["seq_len"] == 32
    for split in ("train", "validation"):
        rows = _rows(first.dataset_dir, split)
        assert len(rows) == stats["sequences"][split] > 0
        assert stats["tokens"][split] == len(rows) * 32
        assert all(len(r) == 32 for r in rows)
    tokenizer = AutoTokenizer.from_pretrained(first.tokenizer_dir)
    assert len(tokenizer) == 400
    assert max(max(r) for r in _rows(first.dataset_dir, "train")) < 400
    report = json.loads((Path(first.dataset_dir).parent / "data_report.json").read_text())
    assert report["tokens"] == stats["tokens"]
    assert (Path(first.dataset_dir).parent / "data_report.png").stat().st_size > 10_000

    second = _prepare(text_corpus, cache)
    assert second.cache_hit is True and second.stats == stats
    assert [p.name for p in cache.iterdir() if not p.name.startswith("data-")] == []

    # A rerun from nothing writes the same shards, byte for byte.
    again = _prepare(text_corpus, tmp_path / "cache2")
    for split in ("train", "validation"):
        names = [p.name for p in _shards(first.dataset_dir, split)]
        assert names == [p.name for p in _shards(again.dataset_dir, split)] and names
        for a, b in zip(_shards(first.dataset_dir, split), _shards(again.dataset_dir, split)):
            assert a.read_bytes() == b.read_bytes(), a.name


def test_make_prepare_finds_a_prepared_corpus_without_starting_ray(
    tiny_cache, tmp_path, monkeypatch, capsys
):
    """`python -m cluster.prepare` (its main, in this process) starts Ray only to build:
    the session's tiny data is found in its cache with Ray's start refused here; a cache
    that misses asks for Ray before anything is built."""
    from tiny_runs import TINY_DATA

    import cluster.prepare

    def no_ray():
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster.prepare, "init_ray", no_ray)
    assert cluster.prepare.main([*TINY_DATA, f"cache_dir={tiny_cache}"]) == 0
    assert "cache hit" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="Ray was started"):
        cluster.prepare.main([*TINY_DATA, f"cache_dir={tmp_path}"])
    assert not list(tmp_path.glob("data-*"))  # nothing built, nothing kept


def _jsonl_corpus(directory: Path, texts: list[str], n_files: int) -> None:
    directory.mkdir(parents=True)
    for i in range(n_files):
        lines = [json.dumps({"text": t}) for t in texts[i::n_files]]
        (directory / f"part-{i}.jsonl").write_text("\n".join(lines) + "\n")


def test_duplicates_across_files_are_removed(pydoc_docs, tmp_path):
    texts = [d.text for d in pydoc_docs if len(d.text.split()) >= 100]  # J > 0.9 after one edit
    texts = list(dict.fromkeys(texts))[:60]
    rng = random.Random(0)
    near = []
    for text in texts[:20]:
        words = text.split()
        words[rng.randrange(len(words))] = "CHANGED"  # one word: a near duplicate
        near.append(" ".join(words))
    # Files are read in path order: the originals (a/) come first in corpus order.
    _jsonl_corpus(tmp_path / "a", texts, n_files=4)
    _jsonl_corpus(tmp_path / "b", texts[20:35] + near, n_files=4)
    no_rules = {f.name: None for f in dataclasses.fields(QualityConfig)}
    prepared = _prepare(
        str(tmp_path / "[ab]" / "*.jsonl"),
        tmp_path / "cache",
        quality=QualityConfig(**no_rules),
        decontam=DecontamConfig(enabled=False),
    )
    report = json.loads((Path(prepared.dataset_dir).parent / "data_report.json").read_text())
    assert report["documents_read"] == 95
    assert report["removed"]["duplicate"] == 15
    assert 18 <= report["removed"]["near_duplicate"] <= 20  # of 20 planted
    assert report["documents_kept"] == 95 - 15 - report["removed"]["near_duplicate"]
    assert all(e["kept"] < e["removed"] for e in report["near_duplicate_examples"])


def test_an_all_too_short_corpus_is_refused(make_text_corpus, tmp_path):
    paths = make_text_corpus([f"line {i} is short" for i in range(50)], name="short")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as info:
        _prepare(paths, cache)
    message = str(info.value)
    assert message.startswith("data") and "min_chars" in message and "\n" not in message
    assert not list(cache.glob("data-*"))


def test_a_seq_len_longer_than_the_validation_split_is_refused(
    make_text_corpus, pydoc_docs, tmp_path
):
    paths = make_text_corpus([d.text for d in pydoc_docs[:40]], name="small")
    with pytest.raises(ConfigError, match="trainer.seq_len"):
        _prepare(paths, tmp_path / "cache", seq_len=100_000)


def test_bad_records_are_counted_with_their_location_and_skipped(text_corpus, tmp_path):
    good = sorted(glob.glob(text_corpus))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    lines = [
        json.dumps({"text": "a good JSON line of text " * 4}),
        "[1, 2]",
        "{not json",
        json.dumps({"title": "no text"}),
    ]
    (bad_dir / "mixed.jsonl").write_bytes(
        ("\n".join(lines) + "\n").encode() + b'{"text": "\xff"}\n'
    )
    (bad_dir / "binary.txt").write_bytes(b"readable paragraph\n\n\x89PNG\xff\xfe\n")
    (bad_dir / "empty.txt").write_bytes(b"")
    data = DataConfig(
        source="text-files", paths=[*good, str(bad_dir / "*")], validation_fraction=0.2
    )
    prepared = prepare_data(data, TokenizerConfig(vocab_size=400), 32, str(tmp_path / "c"))
    bad = prepared.stats["bad_records"]
    assert bad["by_reason"] == {
        "not a JSON object": 1,
        "invalid JSON": 1,
        "no string 'text'": 1,
        "invalid UTF-8": 2,
    }
    assert bad["first"]["not a JSON object"] == [f"{bad_dir / 'mixed.jsonl'}:2"]
    assert sorted(bad["first"]["invalid UTF-8"]) == [
        f"{bad_dir / 'binary.txt'}:3",
        f"{bad_dir / 'mixed.jsonl'}:5",
    ]
    # Mostly bad input fails, with the counts, in one line.
    with pytest.raises(ConfigError, match=r"data.max_bad_fraction=0.05: 5 of \d+ input records"):
        strict = DataConfig(
            source="text-files", paths=[str(bad_dir / "*")], validation_fraction=0.2
        )
        prepare_data(strict, TokenizerConfig(vocab_size=400), 32, str(tmp_path / "c"))
