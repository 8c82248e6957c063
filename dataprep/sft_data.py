"""Instruction data for fine-tuning: read -> chat messages -> tokens with labels -> rows.

Records come from JSONL files, a `datasets` source, or the embedded stdlib QA set, with
either a `messages` list or a `prompt`/`response` pair. Each becomes token ids whose
labels are -100 everywhere except on assistant tokens, so the loss is taken on the
responses only. Rows are `seq_len` long: one example each, or (packing) several, each
with position ids restarting at 0, which is what transformers reads to keep the examples'
attention apart (a block-diagonal causal mask). Bad records are skipped and counted.
The prepared splits are cached like pretraining data (dataprep/pretrain_data.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from tqdm import tqdm

from dataprep.bad_records import BadRecords
from dataprep.chat_template import ensure_chat_template, tokenize_chat
from dataprep.corpus import expand_globs
from dataprep.pretrain_data import PreparedData, is_validation_source
from dataprep.stdlib_qa import stdlib_qa_pairs
from dataprep.tokenizer import load_pretrained_tokenizer
from schemas.data import SFTConfig
from schemas.fields import ConfigError

PREPARE_VERSION = 1
IGNORE_INDEX = -100  # label of tokens that take no part in the loss (PyTorch's default)
ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    where: str  # "file.jsonl:12" or "#12": how a user finds it again
    data: dict | None  # None when the line could not be parsed


# --- reading -------------------------------------------------------------------------------


def _jsonl_records(files: list[Path]) -> Iterator[Record]:
    for path in files:
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path.name}:{line_no}"
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    data = None
                yield Record(where, data if isinstance(data, dict) else None)


def _held_out(key: str, split: str, fraction: float) -> bool:
    return is_validation_source(key, fraction) == (split == "test")


def read_records(cfg: SFTConfig, split: str) -> Iterator[Record]:
    """Raw records of ``split`` ("train" or "test")."""
    if cfg.source == "stdlib-qa":
        for i, pair in enumerate(stdlib_qa_pairs()):
            if _held_out(pair["group"], split, cfg.test_fraction):
                yield Record(f"#{i} ({pair['prompt']})", pair)
    elif cfg.source == "jsonl":
        if cfg.test_paths:
            paths = cfg.paths if split == "train" else cfg.test_paths
            yield from _jsonl_records(
                expand_globs(paths, f"sft.{'test_' if split == 'test' else ''}paths", ".jsonl")
            )
        else:
            for record in _jsonl_records(expand_globs(cfg.paths, "sft.paths", ".jsonl")):
                if _held_out(record.where, split, cfg.test_fraction):
                    yield record
    else:
        own_split = cfg.hf_test_split if split == "test" and cfg.hf_test_split else cfg.hf_split
        ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=own_split)
        for i, row in enumerate(ds):
            if cfg.hf_test_split or _held_out(f"#{i}", split, cfg.test_fraction):
                yield Record(f"{own_split}#{i}", row)


def to_messages(record: dict, cfg: SFTConfig) -> list[dict] | str:
    """Chat turns of a record, or the reason it is bad."""
    if cfg.messages_field in record:
        messages = record[cfg.messages_field]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in messages
        ):
            return "malformed_messages"
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        if not answers:
            return "no_assistant_turn"
        if not any(a.strip() for a in answers):
            return "empty_response"
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    prompt, response = record.get(cfg.prompt_field), record.get(cfg.response_field)
    if not isinstance(prompt, str) or not isinstance(response, str):
        return "missing_field"
    if not response.strip():
        return "empty_response"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def iter_examples(cfg: SFTConfig, split: str, bad: BadRecords) -> Iterator[tuple[str, list]]:
    """(where, messages) of the good records; bad ones are counted in ``bad``."""
    for record in read_records(cfg, split):
        bad.seen += 1
        messages = "malformed_json" if record.data is None else to_messages(record.data, cfg)
        if isinstance(messages, str):
            bad.add(messages, record.where)
        else:
            yield record.where, messages


# --- tokens, labels, rows ------------------------------------------------------------------


def encode_example(tokenizer, messages: list[dict], seq_len: int, truncation: str):
    """(input_ids, labels) of one conversation, or the reason it is dropped."""
    ids, trained = tokenize_chat(tokenizer, messages)
    if len(ids) > seq_len:
        if truncation == "drop":
            return "too_long"
        keep = slice(-seq_len, None) if truncation == "left" else slice(0, seq_len)
        ids, trained = ids[keep], trained[keep]
    labels = [t if flag else IGNORE_INDEX for t, flag in zip(ids, trained)]
    labels[0] = IGNORE_INDEX  # nothing precedes it in this example: never a target
    if all(label == IGNORE_INDEX for label in labels):
        return "no_response_tokens"
    return ids, labels


def build_rows(examples: list[tuple[list, list]], seq_len: int, pad_id: int, packing: bool):
    """Fixed-length rows of input_ids, labels and position_ids (int64 arrays). Packing fills
    each row greedily in order; padding at a row's end has label -100 and, coming after
    every real token, is never attended to by them."""
    rows: list[tuple[list, list, list]] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for ex_ids, ex_labels in examples:
        if ids and (not packing or len(ids) + len(ex_ids) > seq_len):
            rows.append((ids, labels, positions))
            ids, labels, positions = [], [], []
        ids += ex_ids
        labels += ex_labels
        positions += range(len(ex_ids))  # restarts at 0: a new example begins here
    if ids:
        rows.append((ids, labels, positions))
    out = {
        k: np.full((len(rows), seq_len), v, dtype=np.int64)
        for k, v in (("input_ids", pad_id), ("labels", IGNORE_INDEX), ("position_ids", 0))
    }
    for r, (row_ids, row_labels, row_pos) in enumerate(rows):
        n = len(row_ids)
        out["input_ids"][r, :n] = row_ids
        out["labels"][r, :n] = row_labels
        # Pads continue the last example's positions, so they read as part of it.
        out["position_ids"][r] = row_pos + list(
            range(row_pos[-1] + 1, row_pos[-1] + 1 + seq_len - n)
        )
    return out


def encode_split(cfg: SFTConfig, tokenizer, seq_len: int, split: str):
    """(rows, stats) of one split; raises when too many records are bad."""
    bad = BadRecords()
    examples = []
    for where, messages in tqdm(
        iter_examples(cfg, split, bad), desc=f"tokenize {split}", unit="ex", mininterval=1.0
    ):
        if split == "train" and cfg.max_examples and len(examples) >= cfg.max_examples:
            break
        encoded = encode_example(tokenizer, messages, seq_len, cfg.truncation)
        if isinstance(encoded, str):
            bad.add(encoded, where)
        else:
            examples.append(encoded)
    bad.check(cfg.max_bad_fraction, split)
    if not examples:
        raise ConfigError(f"sft: the {split} split has no usable example ({bad.describe()})")
    rows = build_rows(examples, seq_len, tokenizer.pad_token_id, cfg.packing)
    stats = {
        "examples": len(examples),
        "rows": len(rows["input_ids"]),
        "tokens": sum(len(ids) for ids, _ in examples),
        "response_tokens": int((rows["labels"] != IGNORE_INDEX).sum()),
        "bad_records": bad.summary(),
    }
    return rows, stats


# --- cached preparation --------------------------------------------------------------------


def _fingerprint(cfg: SFTConfig, tokenizer_path: str) -> list:
    files = []
    if cfg.source == "jsonl":
        files = expand_globs(cfg.paths + cfg.test_paths, "sft.paths", ".jsonl")
    elif cfg.source == "hf-dataset" and Path(cfg.hf_name).exists():
        files = sorted(p for p in Path(cfg.hf_name).rglob("*") if p.is_file())
    tok = Path(tokenizer_path)
    files += sorted(p for p in tok.glob("*") if p.is_file()) if tok.is_dir() else []
    return [sys.version, tokenizer_path] + [
        (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    ]


def prepare_sft_data(
    cfg: SFTConfig, tokenizer_path: str, seq_len: int, cache_dir: str
) -> PreparedData:
    """Cached "train" and "validation" (the held-out test split) rows plus the tokenizer,
    with a chat template, that the export will carry."""
    payload = {
        "version": PREPARE_VERSION,
        "sft": dataclasses.asdict(cfg),
        "seq_len": seq_len,
        "inputs": _fingerprint(cfg, tokenizer_path),
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    final = Path(cache_dir) / f"sft-{key[:16]}"
    if (final / "stats.json").exists():
        stats = json.loads((final / "stats.json").read_text())
        return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, True)

    tokenizer = load_pretrained_tokenizer(tokenizer_path)
    added_template = ensure_chat_template(tokenizer)
    splits, stats = {}, {"chat_template": "default" if added_template else "tokenizer's own"}
    for split, name in (("train", "train"), ("test", "validation")):
        rows, stats[name] = encode_split(cfg, tokenizer, seq_len, split)
        splits[name] = datasets.Dataset.from_dict(rows)
    stats["sequences"] = {name: s["rows"] for name, s in stats.items() if isinstance(s, dict)}
    stats["seq_len"] = seq_len

    tmp = Path(cache_dir) / f".sft-{key[:16]}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.DatasetDict(splits).save_to_disk(str(tmp / "dataset"))
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same key first
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData(str(final / "dataset"), str(final / "tokenizer"), stats, False)
