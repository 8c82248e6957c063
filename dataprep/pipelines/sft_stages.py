"""The per-batch work of the instruction-data pipeline (pipelines/sft.py), each a plain
function Ray Data runs in its tasks: records into cleaned, tokenized examples (chat turns
cleaned: Unicode NFC, control characters; PII masked only with sft.pii, since an answer may
be meant to hold an address), counts per side, sizes, rows. The driver holds counts and keys,
no examples."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from dataprep.bad_records import BadRecords
from dataprep.formatters.clean import normalize_text
from dataprep.formatters.pii import mask_pii
from dataprep.readers.chat_formats import to_chat_turns
from dataprep.tokens.chat import IGNORE_INDEX, encode_example, pack_examples
from rundir.node_cache import local_tree
from schemas.data import SFTConfig
from schemas.fields import ConfigError

_S, _I = pa.string(), pa.int64()
_IDS = pa.list_(_I)
EXAMPLES = pa.schema(
    [(k, _S) for k in ("key", "split", "where", "drop", "digest")]
    + [("input_ids", _IDS), ("labels", _IDS)]
)
ROWS = pa.schema([("input_ids", _IDS), ("labels", _IDS), ("position_ids", _IDS)])
SPLIT_OF_SIDE = {"train": "train", "test": "validation"}  # record side -> prepared split
PACK_BATCH_EXAMPLES = 4096  # examples packed together: rows restart at a batch's end


_TOKENIZERS: dict = {}


def encode_records(batch: pa.Table, cfg: SFTConfig, tokenizer_dir: str, seq_len: int) -> pa.Table:
    """Each record as chat turns, cleaned and tokenized: (input_ids, labels), or why it is
    dropped (the record's problem, its format's, too_long, no_response_tokens)."""
    from transformers import AutoTokenizer

    if tokenizer_dir not in _TOKENIZERS:  # once per worker process, fetched once per node
        _TOKENIZERS[tokenizer_dir] = AutoTokenizer.from_pretrained(local_tree(tokenizer_dir))
    tokenizer = _TOKENIZERS[tokenizer_dir]
    out = {name: [] for name in EXAMPLES.names}
    for row in batch.to_pylist():
        drop, ids, labels, digest = row["problem"], [], [], ""
        if not drop:
            messages = to_chat_turns(json.loads(row["record"]), cfg)
            if isinstance(messages, str):
                drop = messages
            else:
                messages = [_clean(m, cfg.pii) for m in messages]
                encoded = encode_example(tokenizer, messages, seq_len, cfg.truncation)
                if isinstance(encoded, str):
                    drop = encoded
                else:
                    ids, labels = encoded
                    text = json.dumps(messages, sort_keys=True).encode()
                    digest = hashlib.blake2b(text, digest_size=16).hexdigest()
        for name, value in (
            ("key", row["key"]),
            ("split", row["split"]),
            ("where", row["where"]),
            ("drop", drop),
            ("digest", digest),
            ("input_ids", ids),
            ("labels", labels),
        ):
            out[name].append(value)
    return pa.table(out, schema=EXAMPLES)


def _clean(message: dict, pii: bool) -> dict:
    content = normalize_text(message["content"])
    return {**message, "content": mask_pii(content, Counter()) if pii else content}


def count_examples(batch: pa.Table) -> pa.Table:
    """One row per batch: per side, records seen, kept examples and their tokens, and the
    drops by reason with their first locations (in key order)."""
    summary: dict = {}
    for row in batch.select(["split", "drop", "where", "input_ids"]).to_pylist():
        side = summary.setdefault(row["split"], {"seen": 0, "kept": 0, "tokens": 0, "bad": []})
        side["seen"] += 1
        if row["drop"]:
            side["bad"].append([row["drop"], row["where"]])
        else:
            side["kept"] += 1
            side["tokens"] += len(row["input_ids"])
    return pa.table({"summary": [json.dumps(summary)]})


def merge_counts(summaries: list[dict]) -> dict[str, dict]:
    """Per side: BadRecords (in key order), kept examples, tokens."""
    merged = {side: {"bad": BadRecords(), "kept": 0, "tokens": 0} for side in ("train", "test")}
    for summary in summaries:
        for side, counts in summary.items():
            target = merged[side]
            target["bad"].seen += counts["seen"]
            target["kept"] += counts["kept"]
            target["tokens"] += counts["tokens"]
            for reason, where in counts["bad"]:
                target["bad"].add(reason, where)
    return merged


def check_counts(merged: dict, cfg: SFTConfig) -> None:
    """Too many bad records, or none usable, on either side: a one-line error."""
    for side in SPLIT_OF_SIDE:
        bad = merged[side]["bad"]
        bad.check(cfg.max_bad_fraction, side)
        if not merged[side]["kept"]:
            raise ConfigError(f"sft: the {side} split has no usable example ({bad.describe()})")


def example_sizes(batch: pa.Table) -> pa.Table:
    """One row per batch: examples, their tokens, and the tokens with loss (labels set)."""
    labels = pc.list_flatten(batch.column("labels"))
    return pa.table(
        {
            "examples": [batch.num_rows],
            "tokens": [pc.sum(pc.list_value_length(batch.column("input_ids"))).as_py() or 0],
            "response_tokens": [pc.sum(pc.not_equal(labels, IGNORE_INDEX)).as_py() or 0],
        }
    )


def pack_rows(batch: pa.Table, seq_len: int, pad_id: int, packing: bool) -> pa.Table:
    """Examples as rows of input_ids, labels and position_ids (tokens/chat.py)."""
    examples = list(zip(batch.column("input_ids").to_pylist(), batch.column("labels").to_pylist()))
    if not examples:
        return ROWS.empty_table()
    rows = pack_examples(examples, seq_len, pad_id, packing)
    return pa.table({k: list(v) for k, v in rows.items()}, schema=ROWS)
