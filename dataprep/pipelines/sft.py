"""Instruction data (`sft=*`) as a Ray Data pipeline, like the pretraining corpus, writing
``dataset/<split>/shard-*.parquet`` rows of input_ids, labels and position_ids into a
directory (a local path or a prefix in an object store) that already holds ``tokenizer/``
(with its chat template), which the tasks fetch onto their node:

  read records (readers/)  ->  chat turns, cleaned, tokenized with labels on the assistant
  turns (sft_stages.py)  ->  counted  ->  exact dedup across both sides (dedup/exact.py)
  -> per side: sized, packed into rows, written

Keys sort held-out records before training ones, so of two identical examples on both sides
the training copy is the duplicate that goes: that is decontamination of the training split
against its own test split."""

from __future__ import annotations

import json

import ray.data

from dataprep.dedup.exact import exact_duplicates
from dataprep.filters.documents import kept_rows
from dataprep.pipelines.sft_stages import (
    PACK_BATCH_EXAMPLES,
    SPLIT_OF_SIDE,
    check_counts,
    count_examples,
    encode_records,
    example_sizes,
    merge_counts,
    pack_rows,
)
from dataprep.pipelines.shards import keep_order, shards_written, write_shards
from dataprep.readers.ray_datasets import KEY_PREFIX, records_dataset
from rundir.store import Location
from schemas.data import SFTConfig
from schemas.fields import ConfigError


def prepare_sft_shards(
    cfg: SFTConfig, tokenizer, seq_len: int, out: Location
) -> tuple[dict, dict[str, dict]]:
    """Runs the pipeline into ``out``; the stats of each prepared split and the manifest
    entries of the shards."""
    keep_order()
    examples = (
        records_dataset(cfg, "sft")
        .map_batches(
            encode_records,
            batch_format="pyarrow",
            fn_kwargs={"cfg": cfg, "tokenizer_dir": out.child("tokenizer").uri, "seq_len": seq_len},
        )
        .materialize()  # read twice or three times: counted, deduplicated, packed
    )
    summaries = examples.map_batches(count_examples, batch_format="pyarrow").take_all()
    merged = merge_counts([json.loads(r["summary"]) for r in summaries])
    check_counts(merged, cfg)
    kept = merged["train"]["kept"] + merged["test"]["kept"]
    gone = frozenset(exact_duplicates(examples, kept) if cfg.dedup else {})
    stats, entries = {}, {}
    for side, name in SPLIT_OF_SIDE.items():
        chosen = examples.map_batches(
            kept_rows, batch_format="pyarrow", fn_kwargs={"split": side, "gone": gone}
        )
        if side == "train" and cfg.max_examples is not None:
            chosen = chosen.limit(cfg.max_examples)  # the first ones in key order
        sizes = _sizes(chosen)
        removed = sum(1 for key in gone if key.startswith(KEY_PREFIX[side]))
        if not sizes["examples"]:
            raise ConfigError(
                f"sft: every usable {side} example is a copy of another ({removed} removed); "
                "allowed: distinct examples, or sft.dedup=false to keep copies"
            )
        packed = chosen.map_batches(
            pack_rows,
            batch_size=PACK_BATCH_EXAMPLES,
            batch_format="pyarrow",
            fn_kwargs={
                "seq_len": seq_len,
                "pad_id": tokenizer.pad_token_id,
                "packing": cfg.packing,
            },
        )
        write_shards(packed, out.child("dataset", name))
        rows, shards = shards_written(out.child("dataset", name))
        entries |= {f"dataset/{name}/{shard}": entry for shard, entry in shards.items()}
        stats[name] = {
            "examples": sizes["examples"],
            "rows": rows,
            "tokens": sizes["tokens"],
            "response_tokens": sizes["response_tokens"],
            "duplicates_removed": removed,
            "bad_records": merged[side]["bad"].summary(),
        }
    return stats, entries


def _sizes(chosen: ray.data.Dataset) -> dict[str, int]:
    """Examples, tokens and response tokens: one row per batch, summed here (Dataset.sum
    would start hash-shuffle actors)."""
    sizes = dict.fromkeys(("examples", "tokens", "response_tokens"), 0)
    for row in chosen.map_batches(example_sizes, batch_format="pyarrow").take_all():
        for column in sizes:
            sizes[column] += row[column]
    return sizes
