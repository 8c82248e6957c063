"""How the pretraining pipeline sizes itself from its input, before anything runs.

A corpus over ``data.small_corpus_mib`` runs distributed: 64 read tasks, and exact and near
deduplication each grouped by a hash shuffle (dedup/groups.py). Under it those are fixed
costs, not work: on the embedded corpus (12 MiB of stdlib source, 2 MB of text) the two
shuffles took 7 s and 11 s for 0.6 s of MinHash. A small corpus is read in a task per
SMALL_READ_MIB and deduplicated in one task, on the same row functions with Arrow grouping
all its key rows at once. Either way the marked corpus, the duplicates, the tokenizer and
the packing windows are the same, so the shards and report are too (tested)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import ray

from dataprep.dedup.exact import exact_duplicates_local
from dataprep.dedup.minhash import near_duplicates_local
from dataprep.pipelines.pretrain_report import merge_summaries, summarize
from dataprep.pipelines.shards import MarkedCorpus
from dataprep.readers.documents import corpus_items, hf_text_table, input_fingerprint
from dataprep.readers.ray_datasets import MAX_READ_BLOCKS
from schemas.data import DataConfig

# Input per read task on the small path: the embedded corpus's 12 MiB in 7 tasks keeps
# both cores busy with pydoc's uneven files, at a few hundred ms of overhead in all.
SMALL_READ_MIB = 2.0


@dataclass(frozen=True)
class Layout:
    small: bool  # deduplication in one task, no shuffle
    read_blocks: int  # tasks the files are read and filtered in


def input_mib(data: DataConfig) -> float:
    """The size of the input: its files on disk, or a `datasets` table's Arrow bytes."""
    if data.source == "hf-dataset":
        return hf_text_table(data).nbytes / 2**20
    if data.source == "text-files":  # local or in a store: the sizes the cache key holds
        return sum(size for _, size, _ in input_fingerprint(data)) / 2**20
    return sum(os.path.getsize(item["path"]) for item in corpus_items(data)) / 2**20


def layout_for(data: DataConfig) -> Layout:
    mib = input_mib(data)
    if mib > data.small_corpus_mib:
        return Layout(small=False, read_blocks=MAX_READ_BLOCKS)
    return Layout(
        small=True, read_blocks=max(1, min(MAX_READ_BLOCKS, math.ceil(mib / SMALL_READ_MIB)))
    )


@ray.remote
def small_dedup(marked: MarkedCorpus, data: DataConfig) -> tuple[dict, dict, dict]:
    """The filter stage's counts (as ``_summaries`` merges them), then the exact and near
    duplicates, of a corpus small enough for one task: (merged counts, exact, near)."""
    table = marked.table()
    merged = merge_summaries([json.loads(summarize(table).column("summary")[0].as_py())])
    exact = exact_duplicates_local(table) if data.dedup.exact else {}
    near = near_duplicates_local(table, data.dedup, set(exact)) if data.dedup.near else {}
    return merged, exact, near
