"""Chat conversations as tokens for fine-tuning: the default template, assistant-only loss
spans, (input_ids, labels) per example and fixed-length rows of examples.

A tokenizer's own chat template is used when it has one. Otherwise the default one, which
serving and evaluation fall back to as well (serve/export.py), is used and saved into the
exported tokenizer, so the chat endpoint formats prompts exactly as the model was trained.
Assistant turns end with the EOS token: that is how the model learns to stop. Labels are
IGNORE_INDEX everywhere but on the trained assistant tokens, so the loss is taken on the
responses only.
"""

from __future__ import annotations

import numpy as np
from transformers import PreTrainedTokenizerBase

from serve.export import DEFAULT_CHAT_TEMPLATE

IGNORE_INDEX = -100  # label of tokens that take no part in the loss (PyTorch's default)


class TemplateError(ValueError):
    """The chat template cannot mark assistant spans (it rewrites earlier turns)."""


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give a template-less tokenizer the default one; True when it was added."""
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def chat_segments(tokenizer, messages: list[dict], trained_from: int = 0) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained) pieces: trained pieces are what each
    assistant turn from message ``trained_from`` on adds after its generation prompt (its
    content and end-of-turn marker); everything else (system, user, role headers, earlier
    assistant turns of a preference pair's prompt) is context only.

    Found by rendering each prefix of the conversation, which works for any template that
    only appends (the ones in use do); one that rewrites earlier turns is refused."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    segments: list[tuple[str, bool]] = []
    done = 0  # characters of ``full`` already assigned to a segment
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < trained_from:
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        after = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (after.startswith(before) and full.startswith(after) and len(before) >= done):
            raise TemplateError(
                "the chat template does not render conversations append-only; "
                "assistant tokens cannot be located (use a different template)"
            )
        segments += [(full[done : len(before)], False), (after[len(before) :], True)]
        done = len(after)
    segments.append((full[done:], False))
    return [(text, trained) for text, trained in segments if text]


def tokenize_chat(
    tokenizer, messages: list[dict], trained_from: int = 0
) -> tuple[list[int], list[bool]]:
    """Token ids and a per-token trained flag. Segments are tokenized separately, exactly
    as at inference, where the prompt is tokenized alone and the model continues it."""
    ids: list[int] = []
    trained: list[bool] = []
    for text, is_trained in chat_segments(tokenizer, messages, trained_from):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        trained += [is_trained] * len(piece)
    return ids, trained


def encode_example(
    tokenizer, messages: list[dict], seq_len: int, truncation: str, trained_from: int = 0
):
    """(input_ids, labels) of one conversation, or the reason it is dropped; labels only on
    the assistant turns from message ``trained_from`` on."""
    ids, trained = tokenize_chat(tokenizer, messages, trained_from)
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


def pack_examples(examples: list[tuple[list, list]], seq_len: int, pad_id: int, packing: bool):
    """Fixed-length rows of input_ids, labels and position_ids (int64 arrays): one example
    each, or (packing) several, filled greedily in order, each with position ids restarting
    at 0, which is what transformers reads to keep the examples' attention apart (a
    block-diagonal causal mask). Padding at a row's end has label -100 and, coming after
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
