"""The record formats instruction data comes in, each mapped onto the same chat turns.

messages   {"messages": [{"role": "user", "content": ...}, ...]}           (OpenAI)
prompt-response  {"prompt": ..., "response": ...}
alpaca     {"instruction": ..., "input": ..., "output": ..., "system": ...}  (input, system
           optional; a non-empty input follows the instruction after a blank line, as
           Stanford Alpaca's own prompt put it)
sharegpt   {"conversations": [{"from": "human", "value": ...}, ...]}         (roles mapped by
           sft.sharegpt_roles)

A mapping returns the turns, or the reason the record is bad, so one conversation written in
any of them tokenizes to the same ids and labels. A preference record becomes (prompt turns,
chosen turns, rejected turns) the same way (``to_pair``).
"""

from __future__ import annotations

from collections.abc import Iterator

from dataprep.bad_records import BadRecords
from dataprep.readers.records import iter_records
from schemas.data import CHAT_ROLES, PreferenceConfig, SFTConfig


def detect_format(record: dict, cfg: SFTConfig) -> str | None:
    if cfg.messages_field in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if cfg.prompt_field in record or cfg.response_field in record:
        return "prompt-response"  # with one of the two missing: a bad record of this format
    return None


def check_turns(messages: object) -> list[dict] | str:
    """Well-formed {role, content} turns with a non-empty assistant answer, or the reason not."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and m.get("role") in CHAT_ROLES and isinstance(m.get("content"), str)
        for m in messages
    ):
        return "malformed_messages"
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if not answers:
        return "no_assistant_turn"
    if not any(a.strip() for a in answers):
        return "empty_response"
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _from_messages(record: dict, cfg: SFTConfig) -> list[dict] | str:
    return check_turns(record.get(cfg.messages_field))


def _from_prompt_response(record: dict, cfg: SFTConfig) -> list[dict] | str:
    prompt, response = record.get(cfg.prompt_field), record.get(cfg.response_field)
    if not isinstance(prompt, str) or not isinstance(response, str):
        return "missing_field"
    return check_turns(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    )


def _from_alpaca(record: dict, cfg: SFTConfig) -> list[dict] | str:
    instruction, output = record.get("instruction"), record.get("output")
    extra, system = record.get("input") or "", record.get("system") or ""
    if not all(isinstance(v, str) for v in (instruction, output, extra, system)):
        return "missing_field"
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    turns = [{"role": "system", "content": system}] if system else []
    turns += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return check_turns(turns)


def _from_sharegpt(record: dict, cfg: SFTConfig) -> list[dict] | str:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns
    ):
        return "malformed_messages"
    if any(t.get("from") not in cfg.sharegpt_roles for t in turns):
        return "unknown_sharegpt_role"
    return check_turns(
        [{"role": cfg.sharegpt_roles[t["from"]], "content": t["value"]} for t in turns]
    )


MAPPINGS = {
    "messages": _from_messages,
    "prompt-response": _from_prompt_response,
    "alpaca": _from_alpaca,
    "sharegpt": _from_sharegpt,
}


def to_messages(record: dict, fmt: str, cfg: SFTConfig) -> list[dict] | str:
    return MAPPINGS[fmt](record, cfg)


def to_chat_turns(record: dict, cfg: SFTConfig) -> list[dict] | str:
    """The record's chat turns in sft.format (with auto, read off the record's own fields,
    so a file may mix formats), or the reason it is bad."""
    fmt = detect_format(record, cfg) if cfg.format == "auto" else cfg.format
    return "unknown_format" if fmt is None else to_messages(record, fmt, cfg)


def iter_examples(cfg: SFTConfig, split: str, bad: BadRecords) -> Iterator[tuple[str, list]]:
    """(where, messages) of the good records of ``split``, read in this process; bad ones
    are counted in ``bad``."""
    for record in iter_records(cfg, split, "sft"):
        bad.seen += 1
        messages = record.problem if record.data is None else to_chat_turns(record.data, cfg)
        if isinstance(messages, str):
            bad.add(messages, record.where)
        else:
            yield record.where, messages


def _side_turns(value: object) -> list[dict] | None:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return value if isinstance(value, list) else None


def to_pair(record: dict, cfg: PreferenceConfig) -> tuple[list, list, list] | str:
    """(prompt turns, chosen turns, rejected turns), or the reason the record is bad. The
    prompt is text (one user turn) or turns; each answer is text (one assistant turn) or the
    turns after the prompt; without a prompt, the turns both answers start with."""
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
