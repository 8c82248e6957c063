"""Hostile data files cost counted bad records, never a traceback or the machine's memory:
a JSON line nested 100,000 deep, a record over the size cap, a Parquet dictionary bomb, in
every reader (pretraining documents, SFT and preference records, evaluation's JSONL)."""

from __future__ import annotations

import json
import resource
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_files import dictionary_bomb, long_line

from dataprep.bad_records import BadRecords
from dataprep.readers import parquet
from dataprep.readers.documents import iter_documents
from dataprep.readers.records import iter_records
from evaluation.tasks import translation_items
from schemas.data import DataConfig, PreferenceConfig, SFTConfig
from schemas.evaluation import EvalConfig
from schemas.fields import ConfigError

NESTED = b"[" * 100_000
GOOD = json.dumps({"text": "a good document " * 8, "prompt": "p", "response": "r"})


def _documents(tmp_path: Path, **data) -> tuple[list[str], BadRecords]:
    bad = BadRecords()
    cfg = DataConfig(source="text-files", paths=[str(tmp_path / "*")], **data)
    return [d.text for d in iter_documents(cfg, bad)], bad


def test_a_line_nested_100000_deep_is_one_bad_record_in_every_reader(tmp_path):
    (tmp_path / "mixed.jsonl").write_bytes(GOOD.encode() + b"\n" + NESTED + b"\n")
    texts, bad = _documents(tmp_path)
    assert len(texts) == 1 and dict(bad.counts) == {"nested too deeply": 1}
    assert bad.where["nested too deeply"] == [f"{tmp_path / 'mixed.jsonl'}:2"]
    for cfg, section in (
        (SFTConfig(source="jsonl", paths=[str(tmp_path / "*")], test_fraction=0.49), "sft"),
        (PreferenceConfig(source="files", paths=[str(tmp_path / "*")]), "pref"),
    ):
        records = [*iter_records(cfg, "train", section), *iter_records(cfg, "test", section)]
        assert sorted(r.problem for r in records if r.data is None) == ["too_deep"]
    bad = BadRecords()
    items = translation_items(
        EvalConfig(translation_paths=[str(tmp_path / "*")], source_field="prompt",
                   target_field="response"),
        bad,
    )  # fmt: skip
    assert len(items) == 1 and dict(bad.counts) == {"too_deep": 1}


def test_json_nested_within_the_limit_still_parses(tmp_path):
    nested = {"text": "a good document " * 8, "meta": json.loads("[" * 60 + "]" * 60)}
    brackets = {"text": "[" * 5000 + " brackets inside a string are text"}
    (tmp_path / "ok.jsonl").write_text(json.dumps(nested) + "\n" + json.dumps(brackets) + "\n")
    texts, bad = _documents(tmp_path)
    assert len(texts) == 2 and not bad.counts


def test_records_over_the_cap_are_too_large_and_never_held(tmp_path):
    cap = 4096
    big = json.dumps({"text": "x" * 50_000})
    (tmp_path / "a.jsonl").write_text(f"{GOOD}\n{big}\n{GOOD}\n")
    (tmp_path / "b.txt").write_text("a paragraph\n\n" + "y" * 50_000 + "\n\nlast one\n")
    table = pa.table({"text": ["fine", "z" * 50_000, None]})
    pq.write_table(table, tmp_path / "c.parquet")
    texts, bad = _documents(tmp_path, max_record_bytes=cap)
    assert texts == [json.loads(GOOD)["text"]] * 2 + ["a paragraph", "last one\n", "fine"]
    assert bad.counts["too_large"] == 3 and bad.counts["no string 'text'"] == 1
    assert f"{tmp_path / 'a.jsonl'}:2" in bad.where["too_large"]
    assert f"{tmp_path / 'b.txt'}:3" in bad.where["too_large"]
    sft = SFTConfig(source="jsonl", paths=[str(tmp_path / "a.jsonl")], max_record_bytes=cap)
    problems = [r.problem for s in ("train", "test") for r in iter_records(sft, s, "sft")]
    assert problems.count("too_large") == 1


def test_a_200_mb_line_is_skipped_in_chunks_never_held(tmp_path):
    path = long_line(tmp_path / "big.jsonl", 200 * 2**20)
    with path.open("ab") as f:
        f.write(GOOD.encode() + b"\n")
    tracemalloc.start()
    try:
        texts, bad = _documents(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    path.unlink()
    assert len(texts) == 1 and dict(bad.counts) == {"too_large": 1}
    assert peak < 3 * DataConfig().max_record_bytes  # the cap and a chunk, not 200 MB


def test_the_record_cap_is_a_described_positive_setting():
    with pytest.raises(ConfigError, match=r"data.max_record_bytes=0 .*> 0"):
        DataConfig(max_record_bytes=0)
    with pytest.raises(ConfigError, match="sft.max_record_bytes"):
        SFTConfig(max_record_bytes=-1)


def test_a_text_file_is_read_in_chunks_with_line_numbers_across_them(tmp_path, monkeypatch):
    from dataprep.readers import bounded

    monkeypatch.setattr(bounded, "CHUNK_BYTES", 7)  # every paragraph straddles chunks
    raw = b"first para\r\nstill first\r\n\r\nsecond\rpara\r\r\xff bad\n\nfourth"
    (tmp_path / "t.txt").write_bytes(raw)
    texts, bad = _documents(tmp_path)
    assert texts == ["first para\nstill first", "second\npara", "fourth"]
    assert bad.where["invalid UTF-8"] == [f"{tmp_path / 't.txt'}:7"]  # as read whole


def test_a_parquet_dictionary_bomb_is_one_bad_record_read_from_its_footer(tmp_path):
    bomb = dictionary_bomb(tmp_path / "bomb.parquet")
    assert bomb.stat().st_size < 1000  # 20 GB decoded
    pq.write_table(pa.table({"text": [json.loads(GOOD)["text"]]}), tmp_path / "good.parquet")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    texts, bad = _documents(tmp_path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(texts) == 1 and dict(bad.counts) == {"Parquet expands over 100x its size": 1}
    assert grown_mib < 200  # one decoded batch of the bomb would be 1 GiB
    pref = PreferenceConfig(source="files", paths=[str(bomb)])
    [record] = [r for s in ("train", "test") for r in iter_records(pref, s, "pref")]
    assert record.data is None and record.problem == "parquet_expands_over_100x"


def test_many_rows_of_one_small_entry_are_refused_too(tmp_path):
    # 2 million rows of one 1 KB value: 2 GB decoded from a few kilobytes, the footer's
    # uncompressed size small (RLE indices), so the row count gives it away.
    bomb = dictionary_bomb(tmp_path / "rows.parquet", rows=2_000_000, value_bytes=1024)
    texts, bad = _documents(tmp_path)
    assert texts == [] and dict(bad.counts) == {"Parquet expands over 100x its size": 1}
    assert bomb.stat().st_size < 2_000_000


def test_a_footer_that_understates_is_stopped_while_reading(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["w" * 1000] * 5000}), path, row_group_size=500)
    monkeypatch.setattr(parquet, "_uncompressed_bytes", lambda meta, columns: 1)  # a lie
    monkeypatch.setattr(parquet, "MAX_EXPANSION", 2)
    monkeypatch.setattr(parquet, "BATCH_BYTES", 10_000)
    read = 0
    with pytest.raises(parquet.ExpandsTooMuch, match="decoded"):
        for batch in parquet.parquet_batches(path, ["text"]):
            read += batch.num_rows
    assert read < 5000  # stopped, not read to the end
