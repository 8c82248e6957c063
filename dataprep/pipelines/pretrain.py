"""Pretraining data as a Ray Data pipeline on whatever cluster the job runs on, writing into a
directory the cache then renames into place (dataprep/prepare.py):

  read (readers/)  ->  clean, mask PII, filter, decontaminate (filters/documents.py)
  -> exact and near dedup across the corpus (dedup/)  ->  tokenizer from a bounded sample
  -> tokenize and pack (tokens/)  ->  ``dataset/<split>/shard-*.parquet`` + the data report

The driver holds no documents: only counts, the keys of duplicates, and the tokenizer's
sample as it streams. Beside the shards: ``tokenizer/``, the data report, every removal by
key (duplicates.jsonl) and Ray Data's own execution stats (blocks and the nodes that ran
them). The directory may be a prefix in an object store (``prepared_dir=s3://...``): the
tasks on every node write and read their Parquet there, the driver stages its own files
locally and uploads them, and the packing tasks fetch the tokenizer onto their node."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import ray
from ray.data.context import DataContext

from console import log
from dataprep.dedup.exact import exact_duplicates
from dataprep.dedup.minhash import near_duplicates
from dataprep.filters.decontam import EvalOverlap
from dataprep.filters.documents import filter_documents, kept_rows, split_by_document
from dataprep.pipelines.layout import layout_for, small_dedup
from dataprep.pipelines.pretrain_report import (
    bad_records,
    build_report,
    check_read,
    merge_summaries,
    report_table,
    summarize,
    write_report,
)
from dataprep.pipelines.shards import MarkedCorpus, keep_order, write_window
from dataprep.readers.ray_datasets import documents_dataset
from dataprep.tokens.pack import PACK_BATCH_DOCS, tokenize_and_pack
from dataprep.tokens.tokenizer import build_tokenizer
from rundir.node_cache import local_tree, tree_entries
from rundir.store import Location, upload_tree
from schemas.data import DataConfig, TokenizerConfig
from schemas.fields import ConfigError

SPLITS = ("train", "validation")


def prepare_shards(
    data: DataConfig, tokenizer_cfg: TokenizerConfig, seq_len: int, out: Location, model_path
) -> tuple[dict, dict]:
    """Runs the pipeline into ``out``; returns the stats (the report is written beside) and
    the manifest entries (size, SHA-256) of every file it wrote there."""
    with tempfile.TemporaryDirectory(prefix="zeroray-prepare-") as staging:
        return _prepare(data, tokenizer_cfg, seq_len, out, model_path, Path(staging))


def _prepare(data, tokenizer_cfg, seq_len, out: Location, model_path, staging: Path):
    _configure_ray_data(data)
    layout = layout_for(data)
    stage = StageClock()
    with stage("read_filter"):
        overlap = EvalOverlap(data.decontam) if data.decontam.enabled else None
        filtered = documents_dataset(data, layout.read_blocks).map_batches(
            filter_documents, batch_format="pyarrow", fn_kwargs={"cfg": data, "overlap": overlap}
        )
        marked = MarkedCorpus.write(filtered, out.child("work", "marked"))
        if not layout.small:
            merged = _summaries(marked)
            check_read(merged, data)
    if layout.small:
        with stage("dedup"):  # the counts and both deduplications in one task
            merged, exact, near = ray.get(small_dedup.remote(marked, data))
        check_read(merged, data)
    else:
        exact, near = _distributed_dedup(marked, data, merged["drops"]["kept"], stage)
    by_document = len(merged["splits"]) < 2  # too few sources to split by source
    final = marked.read(["key", "split", "drop", "text"])
    if by_document:
        final = final.map_batches(
            split_by_document,
            batch_format="pyarrow",
            fn_kwargs={"fraction": data.validation_fraction},
        )
    gone = frozenset(exact) | frozenset(near)
    with stage("tokenizer"):
        train = final.map_batches(
            kept_rows, batch_format="pyarrow", fn_kwargs={"split": "train", "gone": gone}
        )
        tokenizer = build_tokenizer(tokenizer_cfg, train, model_path)
        tokenizer.save_pretrained(str(staging / "tokenizer"))
        upload_tree(staging / "tokenizer", out.child("tokenizer").uri)  # the packers read it
    with stage("pack_write"):
        split = data.validation_fraction if by_document else None
        pack = {"tokenizer": out.child("tokenizer"), "seq_len": seq_len, "split_docs": split}
        gone_ref = ray.put(gone)
        written = ray.get(
            [
                _pack_window.remote(marked, w, out.child("dataset"), gone_ref, **pack)
                for w in range(marked.windows(PACK_BATCH_DOCS))
            ]
        )
    sequences = _sequences([s for window in written for s in window], seq_len)
    tokens = {name: rows * seq_len for name, rows in sequences.items()}
    report = build_report(
        merged, {"exact": exact, "near": near}, tokens, overlap.items if overlap else 0
    )
    report["stage_seconds"] = stage.seconds  # not in stats.json: that stays byte-stable
    _write_beside(staging, report, exact, near, filtered.stats())
    out.child("work").delete_dir()
    upload_tree(staging, out.uri)  # the tokenizer again (small), the report and the rest
    entries = tree_entries(staging)
    for shard in (s for window in written for s in window if s["rows"]):
        entries[f"dataset/{shard['split']}/{shard['name']}"] = shard["entry"]
    return {
        "cleaning": report["removed"] | {"kept": report["documents_kept"]},
        "bad_records": bad_records(merged).summary(),
        "documents": {"kept": report["documents_kept"]},
        "sequences": sequences,
        "tokens": tokens,
        "vocab_size": len(tokenizer),
        "seq_len": seq_len,
    }, entries


def _distributed_dedup(marked: MarkedCorpus, data: DataConfig, documents: int, stage):
    """Exact, then near duplicates, each grouped by a hash shuffle across the cluster."""
    with stage("exact_dedup"):
        exact = {}
        if data.dedup.exact:
            exact = exact_duplicates(marked.read(["key", "drop", "digest"]), documents)
    with stage("near_dedup"):
        near = {}
        if data.dedup.near:
            columns = marked.read(["key", "drop", "text"])
            near = near_duplicates(columns, data.dedup, set(exact), documents)
    return exact, near


@ray.remote
def _pack_window(
    marked: MarkedCorpus,
    window: int,
    dataset_dir: Location,
    gone: frozenset,
    tokenizer: Location,
    seq_len: int,
    split_docs: float | None,
) -> list[dict]:
    """One packing window of the corpus (PACK_BATCH_DOCS of its rows, kept or not, in
    corpus order) tokenized, packed and written, each split to its own shard. Windows of
    the corpus's own rows, not of whatever blocks Ray Data read: the tail each window drops
    is then the same however the corpus was read, and so are the shards. Returns what
    write_window says of each shard, with its split."""
    batch = marked.window(window, PACK_BATCH_DOCS, ["key", "split", "drop", "text"])
    if split_docs is not None:
        batch = split_by_document(batch, split_docs)
    tokenizer_dir = local_tree(tokenizer)
    written = []
    for name in SPLITS:
        packed = tokenize_and_pack(batch, tokenizer_dir, seq_len, split=name, gone=gone)
        written.append(write_window(packed, dataset_dir.child(name), window) | {"split": name})
    return written


def _configure_ray_data(data: DataConfig) -> None:
    keep_order()
    # Ray's newer Parquet reader starts footer-reading actors for every read (0.7 GB of them
    # alive at once at the 1 GiB bench corpus, measured); the classic one reads in its tasks.
    DataContext.get_current().use_datasource_v2 = False
    if data.object_store_mib_per_cpu is not None:
        options = DataContext.get_current().execution_options
        budget = data.object_store_mib_per_cpu * 2**20 * ray.cluster_resources().get("CPU", 1)
        options.resource_limits = options.resource_limits.copy(object_store_memory=budget)


def _summaries(marked: MarkedCorpus) -> dict:
    """The filter stage's counts, one summary row per batch summed here."""
    summaries = marked.read(without=["text"]).map_batches(summarize, batch_format="pyarrow")
    return merge_summaries([json.loads(r["summary"]) for r in summaries.take_all()])


def _sequences(shards: list[dict], seq_len: int) -> dict[str, int]:
    sequences = {name: sum(s["rows"] for s in shards if s["split"] == name) for name in SPLITS}
    for name, rows in sequences.items():
        if rows == 0:
            raise ConfigError(
                f"trainer.seq_len={seq_len}: the {name} split holds fewer tokens than one "
                "sequence; allowed: a smaller seq_len or more data"
            )
    return sequences


def _write_beside(out: Path, report: dict, exact: dict, near: dict, ray_stats: str) -> None:
    """The report, every removal by pipeline key, Ray Data's stats (in the local staging
    folder, uploaded with the tokenizer)."""
    write_report(report, out)
    with (out / "duplicates.jsonl").open("w") as f:
        for kind, removed in (("exact", exact), ("near", near)):
            for key, first in sorted(removed.items()):
                f.write(json.dumps({"kind": kind, "removed": key, "kept": first}) + "\n")
    (out / "ray_data_stats.txt").write_text(ray_stats)
    log.info(report_table(report))


class StageClock:
    """Wall seconds of each stage, for the report: where a preparation's time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 1)
