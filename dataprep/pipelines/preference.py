"""Preference pairs for DPO, prepared in the driver (about 2,000 pairs; on Ray Data it would
run like pipelines/sft.py):

  read records (readers/records.py)  ->  (prompt, chosen, rejected) turns
  (readers/chat_formats.py to_pair)  ->  two token rows per pair, labelled on the answer's
  tokens only (tokens/chat.py)  ->  a DatasetDict of both splits

The prompt's tokens (its own assistant turns included) never carry a label: DPO compares the
answers' log-probabilities only. Rows are not packed: pair i is row i of both the chosen and
the rejected columns, right-padded.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from tqdm import tqdm

from dataprep.bad_records import BadRecords
from dataprep.readers.chat_formats import to_pair
from dataprep.readers.records import iter_records
from dataprep.tokens.chat import IGNORE_INDEX, encode_example
from schemas.data import PreferenceConfig
from schemas.fields import ConfigError

SIDES = ("chosen", "rejected")


def prepare_preference_splits(cfg: PreferenceConfig, tokenizer, seq_len: int, out: Path) -> dict:
    """``out``/dataset as a DatasetDict of "train" and "validation" (the held-out test
    split); the stats of each."""
    splits, stats = {}, {}
    for split, name in (("train", "train"), ("test", "validation")):
        rows, stats[name] = encode_split(cfg, tokenizer, seq_len, split)
        splits[name] = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict(splits).save_to_disk(str(out / "dataset"))
    return stats


def encode_split(cfg: PreferenceConfig, tokenizer, seq_len: int, split: str):
    """(rows, stats) of one split; raises when too many records are bad."""
    bad = BadRecords()
    pairs = []
    records = iter_records(cfg, split, "pref")
    for record in tqdm(records, desc=f"tokenize {split} pairs", unit="pair", mininterval=1.0):
        if split == "train" and cfg.max_examples and len(pairs) >= cfg.max_examples:
            break
        bad.seen += 1
        pair = record.problem if record.data is None else to_pair(record.data, cfg)
        encoded = (
            pair if isinstance(pair, str) else encode_pair(tokenizer, pair, seq_len, cfg.truncation)
        )
        if isinstance(encoded, str):
            bad.add(encoded, record.where)
        else:
            pairs.append(encoded)
    bad.check(cfg.max_bad_fraction, split, "pref.max_bad_fraction")
    if not pairs:
        raise ConfigError(f"pref: the {split} split has no usable pair ({bad.describe()})")
    rows = pair_rows(pairs, seq_len, tokenizer.pad_token_id)
    stats = {
        "examples": len(pairs),
        "rows": len(pairs),
        "tokens": sum(len(p[side][0]) for p in pairs for side in SIDES),
        "response_tokens": int(
            sum((rows[f"{side}_labels"] != IGNORE_INDEX).sum() for side in SIDES)
        ),
        "bad_records": bad.summary(),
    }
    return rows, stats


def encode_pair(tokenizer, pair: tuple[list, list, list], seq_len: int, truncation: str):
    """{chosen: (ids, labels), rejected: (ids, labels)}, or the reason the pair is dropped."""
    prompt, *answers = pair
    encoded = {}
    for side, answer in zip(SIDES, answers):
        result = encode_example(tokenizer, prompt + answer, seq_len, truncation, len(prompt))
        if isinstance(result, str):
            return result
        encoded[side] = result
    return encoded


def pair_rows(pairs: list[dict], seq_len: int, pad_id: int) -> dict:
    """Columns index, {chosen,rejected}_{input_ids,labels}: one right-padded row per pair.
    ``index`` is the pair's row number, which keys its reference log-probabilities."""
    out = {"index": np.arange(len(pairs), dtype=np.int64)}
    for side in SIDES:
        ids = np.full((len(pairs), seq_len), pad_id, dtype=np.int64)
        labels = np.full((len(pairs), seq_len), IGNORE_INDEX, dtype=np.int64)
        for r, pair in enumerate(pairs):
            row_ids, row_labels = pair[side]
            ids[r, : len(row_ids)] = row_ids
            labels[r, : len(row_labels)] = row_labels
        out[f"{side}_input_ids"], out[f"{side}_labels"] = ids, labels
    return out
