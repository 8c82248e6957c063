"""The pipeline end to end, writing into a directory the cache then renames into place:
``dataset/<split>/shard-*.parquet`` (rows of seq_len token ids), ``tokenizer/``, the data
report, and Ray Data's own execution stats (blocks and the nodes that ran them)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import ray.data
from ray.data.context import DataContext
from ray.data.datasource import FilenameProvider

from dataprep.bad_records import BadRecords
from dataprep.filtering.decontam import EvalOverlap
from dataprep.filtering.report import build_report, merge_summaries, report_table, write_report
from dataprep.packing import PACK_BATCH_DOCS
from dataprep.pipeline.dedup import exact_duplicates, near_duplicates
from dataprep.pipeline.stages import (
    MARKED,
    filter_documents,
    kept_rows,
    split_by_document,
    summarize,
    tokenize_and_pack,
)
from dataprep.readers.ray_datasets import documents_dataset
from dataprep.tokenizer import load_pretrained_tokenizer, train_bpe_tokenizer
from schemas.data import DataConfig, TokenizerConfig
from schemas.fields import ConfigError

SPLITS = ("train", "validation")


class ShardNames(FilenameProvider):
    """shard-<write task>: the same names on every run, in corpus order (Ray's default
    names carry a random write id)."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"shard-{task_index:06d}"


def prepare_shards(
    data: DataConfig, tokenizer_cfg: TokenizerConfig, seq_len: int, out: Path, model_path
) -> dict:
    """Runs the pipeline into ``out``; returns the stats (the report is written beside)."""
    options = DataContext.get_current().execution_options
    options.preserve_order = True  # reruns: same bytes
    # Ray's newer Parquet reader starts footer-reading actors for every read (0.7 GB of them
    # alive at once at the 1 GiB bench corpus, measured); the classic one reads in its tasks.
    DataContext.get_current().use_datasource_v2 = False
    if data.object_store_mib_per_cpu is not None:
        budget = data.object_store_mib_per_cpu * 2**20 * ray.cluster_resources().get("CPU", 1)
        options.resource_limits = options.resource_limits.copy(object_store_memory=budget)
    clock = StageClock()
    overlap = EvalOverlap(data.decontam) if data.decontam.enabled else None
    filtered = documents_dataset(data).map_batches(
        filter_documents, batch_format="pyarrow", fn_kwargs={"cfg": data, "overlap": overlap}
    )
    marked = MarkedCorpus.write(filtered, out / "work" / "marked")
    summaries = marked.read(without=["text"]).map_batches(summarize, batch_format="pyarrow")
    merged = merge_summaries([json.loads(r["summary"]) for r in summaries.take_all()])
    _check_bad(merged, data)
    clock.lap("read_filter")
    documents = merged["drops"]["kept"]
    exact = (
        exact_duplicates(marked.read(["key", "drop", "digest"]), documents)
        if data.dedup.exact
        else {}
    )
    clock.lap("exact_dedup")
    near = (
        near_duplicates(marked.read(["key", "drop", "text"]), data.dedup, set(exact), documents)
        if data.dedup.near
        else {}
    )
    clock.lap("near_dedup")
    gone = frozenset(exact) | frozenset(near)
    final = marked.read(["key", "split", "drop", "text"])
    if len(merged["splits"]) < 2:
        final = final.map_batches(
            split_by_document,
            batch_format="pyarrow",
            fn_kwargs={"fraction": data.validation_fraction},
        )
    select = {name: {"split": name, "gone": gone} for name in SPLITS}
    sample = final.map_batches(kept_rows, batch_format="pyarrow", fn_kwargs=select["train"])

    tokenizer = _tokenizer(tokenizer_cfg, sample, model_path)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    clock.lap("tokenizer")
    for name in SPLITS:
        packed = final.map_batches(
            tokenize_and_pack,
            batch_size=PACK_BATCH_DOCS,
            batch_format="pyarrow",
            fn_kwargs={"tokenizer_dir": str(out / "tokenizer"), "seq_len": seq_len} | select[name],
        )
        packed.write_parquet(
            str(out / "dataset" / name),
            filename_provider=ShardNames(),
            mode=ray.data.SaveMode.OVERWRITE,  # a fresh directory: nothing to overwrite
        )
        clock.lap(f"pack_write_{name}")
    sequences = {name: rows_written(out / "dataset" / name) for name in SPLITS}
    for name, rows in sequences.items():
        if rows == 0:
            raise ConfigError(
                f"trainer.seq_len={seq_len}: the {name} split holds fewer tokens than one "
                "sequence; allowed: a smaller seq_len or more data"
            )
    tokens = {name: rows * seq_len for name, rows in sequences.items()}
    report = build_report(
        merged, {"exact": exact, "near": near}, tokens, overlap.items if overlap else 0
    )
    report["stage_seconds"] = clock.seconds  # not in stats.json: that stays byte-stable
    write_report(report, out)
    with (out / "duplicates.jsonl").open("w") as f:  # every removal, by pipeline key
        for kind, removed in (("exact", exact), ("near", near)):
            for key, first in sorted(removed.items()):
                f.write(json.dumps({"kind": kind, "removed": key, "kept": first}) + "\n")
    (out / "ray_data_stats.txt").write_text(filtered.stats())
    shutil.rmtree(out / "work")
    print(report_table(report), flush=True)
    return {
        "cleaning": report["removed"] | {"kept": report["documents_kept"]},
        "bad_records": _bad(merged).summary(),
        "documents": {"kept": report["documents_kept"]},
        "sequences": sequences,
        "tokens": tokens,
        "vocab_size": len(tokenizer),
        "seq_len": seq_len,
    }


class MarkedCorpus:
    """The filter stage's output (every document with its verdict, kept texts cleaned),
    written once to Parquet and read back by each later pass, only the columns it needs.
    Materialized in the object store instead, the whole corpus sat in memory until the
    end: 1.06 GB of it at the 1 GiB bench corpus, 0.1 GB at 100 MiB (measured)."""

    def __init__(self, files: list[str]):
        self.files = files

    @classmethod
    def write(cls, ds: ray.data.Dataset, directory: Path) -> MarkedCorpus:
        ds.write_parquet(
            str(directory), filename_provider=ShardNames(), mode=ray.data.SaveMode.OVERWRITE
        )
        return cls(sorted(str(f) for f in directory.glob("*.parquet")))  # corpus order

    def read(self, columns: list[str] | None = None, without=()) -> ray.data.Dataset:
        names = columns or [n for n in MARKED.names if n not in without]
        if not self.files:  # nothing read at all: the empty-corpus error comes next
            return ray.data.from_arrow(MARKED.empty_table().select(names))
        return ray.data.read_parquet(self.files, columns=names)


class StageClock:
    """Wall seconds of each stage, for the report: where a preparation's time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 1)
        self._last = now


def _bad(merged: dict) -> BadRecords:
    bad = BadRecords()
    for reason, where in merged["bad_where"]:
        bad.add(reason, where)
    bad.counts.clear()
    for key, count in merged["drops"].items():
        if key.startswith("bad:"):
            bad.counts[key[4:]] = count
    bad.seen = sum(merged["drops"].values())
    return bad


def _check_bad(merged: dict, data: DataConfig) -> None:
    bad = _bad(merged)
    if bad.counts:
        print(f"[zeroray] data: skipped {sum(bad.counts.values())} bad records: {bad.describe()}")
    bad.check(data.max_bad_fraction, "input", "data.max_bad_fraction")
    if not merged["drops"].get("kept"):
        raise ConfigError(
            f"data: the corpus is empty after cleaning ({dict(merged['drops'])}); "
            f"allowed: sources with documents of at least data.min_chars={data.min_chars} "
            "characters that pass data.quality"
        )


def _tokenizer(cfg: TokenizerConfig, train: ray.data.Dataset, model_path):
    if cfg.kind != "train-bpe":
        return load_pretrained_tokenizer(cfg.name_or_path or model_path)
    sample = train.limit(cfg.sample_documents).select_columns(["text"])
    texts = (row["text"] for row in sample.iter_rows())  # streamed: never all at once
    return train_bpe_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)


def rows_written(directory: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(directory.glob("*.parquet")))
