"""What makes the small and the distributed preparation write the same bytes, without Ray:
packing windows of the marked corpus's own rows however its files fell, filter-stage counts
that sum the same however the batches fell, and the threshold that picks the path."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dataprep.filters.documents import MARKED
from dataprep.pipelines.layout import layout_for
from dataprep.pipelines.pretrain_report import bad_records, merge_summaries, summarize
from dataprep.pipelines.shards import MarkedCorpus
from schemas.data import DataConfig


def _marked(n: int) -> pa.Table:
    rows = []
    for i in range(n):
        bad = f"bad:reason{i % 2}" if i % 3 == 0 else ""
        rows.append(
            {name: 0 if MARKED.field(name).type == pa.int64() else "" for name in MARKED.names}
            | {"key": f"{i:05d}", "drop": bad, "where": f"f:{i}" if bad else "", "words": 3}
        )
    return pa.Table.from_pylist(rows, schema=MARKED)


def _corpus(tmp_path, table: pa.Table, sizes: list[int], name: str) -> MarkedCorpus:
    (tmp_path / name).mkdir()
    start = 0
    for i, size in enumerate(sizes):
        pq.write_table(table.slice(start, size), tmp_path / name / f"shard-{i:06d}-0.parquet")
        start += size
    files = sorted(str(p) for p in (tmp_path / name).glob("*.parquet"))
    return MarkedCorpus(pafs.LocalFileSystem(), files)


def test_packing_windows_are_the_corpus_rows_however_the_files_fell(tmp_path):
    table = _marked(23)
    few = _corpus(tmp_path, table, [23], "one")
    many = _corpus(tmp_path, table, [4, 1, 9, 2, 7], "five")
    assert few.windows(5) == many.windows(5) == 5
    for w in range(5):
        expected = [f"{i:05d}" for i in range(w * 5, min(w * 5 + 5, 23))]
        for corpus in (few, many):
            assert corpus.window(w, 5, ["key", "drop"]).column("key").to_pylist() == expected
    assert many.table().column("key").to_pylist() == table.column("key").to_pylist()


def test_filter_counts_merge_the_same_however_the_batches_fell():
    table = _marked(60)  # 20 bad records of two reasons: more than the report shows of each

    def merged(sizes):
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        parts = [summarize(table.slice(s, n)) for s, n in zip(starts, sizes)]
        return merge_summaries([json.loads(p.column("summary")[0].as_py()) for p in parts])

    whole, blocks = merged([60]), merged([7, 30, 1, 22])
    assert bad_records(whole).summary() == bad_records(blocks).summary()
    assert bad_records(whole).summary()["first"]["reason0"] == [
        f"f:{i}" for i in (0, 6, 12, 18, 24)
    ]
    assert whole["drops"] == blocks["drops"] and list(whole["drops"]) == list(blocks["drops"])


def test_the_threshold_picks_the_path_from_the_input_size(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"x" * 3 * 2**20)
    paths = [str(tmp_path / "*.txt")]
    small = layout_for(DataConfig(source="text-files", paths=paths, small_corpus_mib=4))
    large = layout_for(DataConfig(source="text-files", paths=paths, small_corpus_mib=2))
    assert small.small and small.read_blocks == 2  # a read task per 2 MiB
    assert not large.small and large.read_blocks == 64
    assert not layout_for(DataConfig(source="text-files", paths=paths, small_corpus_mib=0)).small
