"""Preference tuning pieces on real tokenizers and a real (tiny) model: the record formats of
SFT data, preference pairs and their masks, and the DPO loss against an implementation
written here from the paper's formula."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dataprep.bad_records import BadRecords
from dataprep.pipelines.preference import encode_pair, encode_split, pair_rows
from dataprep.readers.chat_formats import detect_format, iter_examples, to_messages, to_pair
from dataprep.readers.records import iter_records
from dataprep.readers.stdlib_qa import stdlib_preference_pairs
from dataprep.tokens.chat import IGNORE_INDEX, encode_example
from schemas.data import PreferenceConfig, SFTConfig
from schemas.fields import ConfigError
from trainer.objectives.dpo import RewardStats, answer_logps, dpo_loss, pair_logps

SYSTEM, QUESTION, ANSWER = "Be brief.", "What is 2 + 2?", "Four."
EXTRA = "Answer in words."

# One conversation written in every format zeroray reads.
AS_MESSAGES = {
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{QUESTION}\n\n{EXTRA}"},
        {"role": "assistant", "content": ANSWER},
    ]
}
AS_ALPACA = {"system": SYSTEM, "instruction": QUESTION, "input": EXTRA, "output": ANSWER}
AS_SHAREGPT = {
    "conversations": [
        {"from": "system", "value": SYSTEM},
        {"from": "human", "value": f"{QUESTION}\n\n{EXTRA}"},
        {"from": "gpt", "value": ANSWER},
    ]
}


# --- SFT formats ----------------------------------------------------------------------------


def test_every_format_of_one_conversation_gives_identical_ids_and_labels(chat_tokenizer):
    cfg = SFTConfig()
    encoded = {}
    for name, record in (
        ("messages", AS_MESSAGES),
        ("alpaca", AS_ALPACA),
        ("sharegpt", AS_SHAREGPT),
    ):
        assert detect_format(record, cfg) == name
        messages = to_messages(record, name, cfg)
        encoded[name] = encode_example(chat_tokenizer, messages, 128, "left")
    assert encoded["messages"] == encoded["alpaca"] == encoded["sharegpt"]
    ids, labels = encoded["messages"]
    assert chat_tokenizer.decode([t for t in labels if t != IGNORE_INDEX]).startswith(ANSWER)
    # Without system and input, the prompt-response pair is the same conversation too.
    plain = to_messages({"prompt": QUESTION, "response": ANSWER}, "prompt-response", cfg)
    alpaca = to_messages({"instruction": QUESTION, "output": ANSWER}, "alpaca", cfg)
    assert plain == alpaca


def test_sharegpt_roles_are_configurable_and_unknown_ones_are_bad(chat_tokenizer):
    record = {"conversations": [{"from": "q", "value": "Hi?"}, {"from": "a", "value": "Hi."}]}
    assert to_messages(record, "sharegpt", SFTConfig()) == "unknown_sharegpt_role"
    cfg = SFTConfig(sharegpt_roles={"q": "user", "a": "assistant"})
    assert to_messages(record, "sharegpt", cfg) == [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hi."},
    ]
    with pytest.raises(ConfigError, match="sft.sharegpt_roles.q"):
        SFTConfig(sharegpt_roles={"q": "robot"})


def test_files_mixing_formats_and_parquet_are_read(tmp_path):
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(r) for r in (AS_MESSAGES, AS_ALPACA, AS_SHAREGPT, {"text": "x"}))
    )
    table = pa.Table.from_pylist([{"instruction": QUESTION, "output": ANSWER, "input": ""}])
    pq.write_table(table, tmp_path / "more.parquet")
    cfg = SFTConfig(
        source="jsonl",
        paths=[str(jsonl), str(tmp_path / "*.parquet")],
        test_paths=[str(jsonl)],
        max_bad_fraction=0.5,
    )
    bad = BadRecords()
    examples = list(iter_examples(cfg, "train", bad))
    assert len(examples) == 4
    assert examples[0][1] == examples[1][1] == examples[2][1]
    assert bad.counts == {"unknown_format": 1} and bad.where["unknown_format"] == ["mixed.jsonl:4"]


# --- preference pairs -----------------------------------------------------------------------


def test_preference_labels_cover_the_answer_only_never_the_prompt(chat_tokenizer):
    # A prompt with an earlier assistant turn: that turn is context, not a trained answer.
    prompt = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ]
    record = {"prompt": prompt, "chosen": "Green.", "rejected": "Seven."}
    pair = to_pair(record, PreferenceConfig())
    encoded = encode_pair(chat_tokenizer, pair, 128, "left")
    chosen_ids, chosen_labels = encoded["chosen"]
    rejected_ids, rejected_labels = encoded["rejected"]
    prompt_text = chat_tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=True
    )
    prompt_ids = chat_tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    # Both rows start with the same prompt tokens, none of which is labelled.
    assert chosen_ids[:n] == rejected_ids[:n] == list(prompt_ids)
    assert set(chosen_labels[:n]) == set(rejected_labels[:n]) == {IGNORE_INDEX}
    # Everything after the prompt is labelled: the answer and its end-of-turn token.
    assert chosen_labels[n:] == chosen_ids[n:]
    assert chat_tokenizer.decode(chosen_ids[n:]) == "Green." + chat_tokenizer.eos_token
    rows = pair_rows([encoded], 128, chat_tokenizer.pad_token_id)
    assert rows["chosen_input_ids"].shape == (1, 128) and rows["index"].tolist() == [0]
    assert (rows["rejected_labels"][0, len(rejected_ids) :] == IGNORE_INDEX).all()


def test_an_implicit_prompt_is_the_shared_start_of_both_conversations(chat_tokenizer):
    user = {"role": "user", "content": QUESTION}
    explicit = to_pair(
        {"prompt": QUESTION, "chosen": "Four.", "rejected": "Five."}, PreferenceConfig()
    )
    implicit = to_pair(
        {
            "chosen": [user, {"role": "assistant", "content": "Four."}],
            "rejected": [user, {"role": "assistant", "content": "Five."}],
        },
        PreferenceConfig(),
    )
    assert explicit == implicit
    a = encode_pair(chat_tokenizer, explicit, 64, "left")
    b = encode_pair(chat_tokenizer, implicit, 64, "left")
    assert a == b


def test_bad_pairs_are_counted_by_reason(chat_tokenizer, tmp_path):
    good = {"prompt": "Say hi.", "chosen": "Hi.", "rejected": "No."}
    lines = [json.dumps(good)] * 12 + [
        "{not json",  # 13
        json.dumps({"prompt": "Say hi.", "chosen": "Hi."}),  # 14: no rejected
        json.dumps({"prompt": "Say hi.", "chosen": "Hi.", "rejected": "Hi."}),  # 15
        json.dumps({"prompt": "Say hi.", "chosen": "  ", "rejected": "No."}),  # 16
        json.dumps(
            {"prompt": "Say hi.", "chosen": [{"role": "robot", "content": "x"}], "rejected": "No."}
        ),  # 17
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"prompt": "\xff"}\n')  # 18
    cfg = PreferenceConfig(source="files", paths=[str(path)], test_paths=[str(path)])
    with pytest.raises(ConfigError, match="pref.max_bad_fraction"):
        encode_split(cfg, chat_tokenizer, 64, "train")
    cfg = PreferenceConfig(
        source="files", paths=[str(path)], test_paths=[str(path)], max_bad_fraction=0.5
    )
    rows, stats = encode_split(cfg, chat_tokenizer, 64, "train")
    assert stats["examples"] == 12 and rows["chosen_input_ids"].shape == (12, 64)
    assert stats["bad_records"]["by_reason"] == {
        "malformed_json": 1,
        "missing_field": 1,
        "identical_answers": 1,
        "empty_response": 1,
        "malformed_messages": 1,
        "invalid_utf8": 1,
    }
    assert stats["bad_records"]["first"]["invalid_utf8"] == ["pairs.jsonl:18"]


def test_the_embedded_pairs_ask_about_one_name_and_answer_from_the_same_module():
    pairs = list(stdlib_preference_pairs())
    assert len(pairs) > 1000
    for pair in pairs[:200]:
        assert pair["chosen"] != pair["rejected"]
        assert pair["prompt"].startswith(("What does `", "What is `"))
    # Held out by package, like the QA set: no package on both sides.
    cfg = PreferenceConfig()
    train = {r.data["group"] for r in iter_records(cfg, "train", "pref")}
    test = {r.data["group"] for r in iter_records(cfg, "test", "pref")}
    assert train and test and not train & test


# --- the DPO loss ---------------------------------------------------------------------------


def _reference_dpo(pc, pr, rc, rr, beta, smoothing):
    """The DPO objective as the paper writes it, in float64, written independently."""
    pc, pr, rc, rr = (t.double() for t in (pc, pr, rc, rr))
    h = beta * ((pc - rc) - (pr - rr))
    sigmoid = 1 / (1 + torch.exp(-h))
    return -(1 - smoothing) * torch.log(sigmoid) - smoothing * torch.log(1 - sigmoid)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_dpo_loss_matches_an_independent_implementation(smoothing):
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(64, generator=gen) * 5 - 20 for _ in range(4))
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, 0.3, smoothing)
    expected = _reference_dpo(pc, pr, rc, rr, 0.3, smoothing)
    assert torch.allclose(losses.double(), expected, atol=1e-6, rtol=0)
    assert torch.allclose(chosen_rewards, 0.3 * (pc - rc))
    assert torch.allclose(rejected_rewards, 0.3 * (pr - rr))


def test_answer_logps_sum_the_labelled_tokens_and_ignore_padding(tiny_model, chat_tokenizer):
    pair = to_pair({"prompt": QUESTION, "chosen": "Four.", "rejected": "Five."}, PreferenceConfig())
    encoded = encode_pair(chat_tokenizer, pair, 64, "left")
    ids, labels = encoded["chosen"]
    with torch.no_grad():
        logits = tiny_model(torch.tensor([ids])).logits[0]
    by_hand = sum(
        torch.log_softmax(logits[t - 1], -1)[ids[t]].item()
        for t in range(1, len(ids))
        if labels[t] != IGNORE_INDEX
    )
    rows = pair_rows([encoded], 64, chat_tokenizer.pad_token_id)
    batch = {k: torch.from_numpy(v) for k, v in rows.items()}
    with torch.no_grad():
        chosen, _ = pair_logps(tiny_model, batch, torch.device("cpu"))
        direct = answer_logps(tiny_model(torch.tensor([ids])).logits, torch.tensor([labels]))
    assert chosen.item() == pytest.approx(by_hand, abs=1e-4)  # padded row = unpadded row
    assert direct.item() == pytest.approx(by_hand, abs=1e-4)


def test_at_the_start_the_loss_is_log_2_and_the_margin_zero(tiny_model, chat_tokenizer):
    records = [
        {"prompt": f"What is {a} + {b}?", "chosen": str(a + b), "rejected": str(a + b + 1)}
        for a, b in ((1, 2), (3, 4), (5, 6))
    ]
    encoded = [
        encode_pair(chat_tokenizer, to_pair(r, PreferenceConfig()), 48, "left") for r in records
    ]
    batch = {k: torch.from_numpy(v) for k, v in pair_rows(encoded, 48, 0).items()}
    with torch.no_grad():
        policy = pair_logps(tiny_model, batch, torch.device("cpu"))
        reference = pair_logps(tiny_model, batch, torch.device("cpu"))
    losses, chosen_rewards, rejected_rewards = dpo_loss(*policy, *reference, beta=0.1)
    assert (losses == torch.tensor(math.log(2), dtype=losses.dtype)).all()
    stats = RewardStats(torch.device("cpu"))
    stats.add(losses, chosen_rewards, rejected_rewards)
    read = stats.read(prefix="val_")
    assert read["val_reward_margin"] == 0.0 and read["val_reward_accuracy"] == 0.0
    assert read["val_loss"] == pytest.approx(math.log(2), abs=1e-7)
