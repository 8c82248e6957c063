"""Preference pairs for DPO: read -> (prompt turns, chosen turns, rejected turns) -> two
token rows per pair, labelled on the answer's tokens only.

A record is ``{prompt, chosen, rejected}``. The prompt is text (one user turn) or a list of
{role, content} turns; each answer is text (one assistant turn) or the list of turns that
follow the prompt. Without a prompt, chosen and rejected are whole conversations and the
turns they share at the start are the prompt. The prompt's tokens (its own assistant turns
included) never carry a label: DPO compares the answers' log-probabilities only. Rows are not
packed: pair i is row i of both the chosen and the rejected columns, right-padded.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from dataprep.bad_records import BadRecords
from dataprep.chat_formats import check_turns
from dataprep.pretrain_data import PreparedData
from dataprep.records import Record, split_records
from dataprep.sft_data import IGNORE_INDEX, encode_example, prepare_chat_data, save_in_driver
from dataprep.stdlib_qa import stdlib_preference_pairs
from schemas.data import PreferenceConfig
from schemas.fields import ConfigError

SIDES = ("chosen", "rejected")


def read_records(cfg, split: str) -> Iterator[Record]:
    """Raw records of ``split`` ("train" or "test")."""
    return split_records(cfg, split, "pref", stdlib_preference_pairs)


def _side_turns(value: object) -> list[dict] | None:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return value if isinstance(value, list) else None


def to_pair(record: dict, cfg: PreferenceConfig) -> tuple[list, list, list] | str:
    """(prompt turns, chosen turns, rejected turns), or the reason the record is bad."""
    prompt = record.get(cfg.prompt_field)
    chosen = _side_turns(record.get(cfg.chosen_field))
    rejected = _side_turns(record.get(cfg.rejected_field))
    if chosen is None or rejected is None:
        return "missing_field"
    if prompt is None:  # implicit prompt: the turns both conversations start with
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not prompt:
            return "missing_field"
    elif isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    elif not isinstance(prompt, list):
        return "missing_field"
    sides = []
    for side in (chosen, rejected):
        turns = check_turns(prompt + side)
        if isinstance(turns, str):
            return turns
        if not any(m["role"] == "assistant" and m["content"].strip() for m in turns[len(prompt) :]):
            return "empty_response"
        sides.append(turns[len(prompt) :])
    if sides[0] == sides[1]:
        return "identical_answers"
    return turns[: len(prompt)], sides[0], sides[1]


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


def encode_split(cfg: PreferenceConfig, tokenizer, seq_len: int, split: str):
    """(rows, stats) of one split; raises when too many records are bad."""
    bad = BadRecords()
    pairs = []
    for record in tqdm(
        read_records(cfg, split), desc=f"tokenize {split} pairs", unit="pair", mininterval=1.0
    ):
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


def prepare_preference_data(
    cfg: PreferenceConfig, tokenizer_path: str, seq_len: int, cache_dir: str
) -> PreparedData:
    return prepare_chat_data(
        "pref",
        cfg,
        tokenizer_path,
        seq_len,
        cache_dir,
        save_in_driver(lambda tokenizer, split: encode_split(cfg, tokenizer, seq_len, split)),
    )
