"""Fine-tuning data: chat template, assistant-only labels, packing masks, bad records and the
embedded stdlib QA set, on real tokenizers and real (tiny) models."""

from __future__ import annotations

import json

import pytest
import torch
from chat_examples import CHAT

from dataprep.bad_records import BadRecords
from dataprep.held_out import is_held_out
from dataprep.readers.chat_formats import iter_examples
from dataprep.readers.stdlib_qa import first_sentence, stdlib_qa_pairs
from dataprep.tokens.chat import (
    IGNORE_INDEX,
    TemplateError,
    chat_segments,
    encode_example,
    ensure_chat_template,
    pack_examples,
)
from schemas.data import SFTConfig
from serve.export import DEFAULT_CHAT_TEMPLATE, load_export
from trainer.step import model_inputs

# --- template -------------------------------------------------------------------------------


def test_serving_and_evaluation_load_template_less_exports_with_the_training_template(
    tiny_export,
):
    # tiny_export's BPE has no chat template: the shared loader must fall back to the one
    # fine-tuning trains with, and be ready for left-padded batches.
    export = load_export(str(tiny_export))
    assert export.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    assert export.tokenizer.padding_side == "left"
    assert export.tokenizer.pad_token_id is not None
    assert export.context_length == export.model.config.n_positions


def test_only_assistant_turns_are_trained(chat_tokenizer):
    segments = chat_segments(chat_tokenizer, CHAT)
    trained = [text for text, flag in segments if flag]
    eos = chat_tokenizer.eos_token
    assert trained == [f"Four.{eos}", f"Six, of course.{eos}"]
    # The pieces put back together are exactly the rendered conversation.
    assert "".join(t for t, _ in segments) == chat_tokenizer.apply_chat_template(
        CHAT, tokenize=False
    )
    # The context before each answer is what serving sends as the prompt.
    prompt = chat_tokenizer.apply_chat_template(
        CHAT[:2], tokenize=False, add_generation_prompt=True
    )
    assert segments[0] == (prompt, False)


def test_a_template_that_rewrites_earlier_turns_is_refused(
    chat_tokenizer, tokenizer_copy, tmp_path
):
    other = tokenizer_copy(chat_tokenizer, tmp_path)
    # Puts the number of messages first: every prefix renders differently.
    other.chat_template = (
        "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(TemplateError, match="append-only"):
        chat_segments(other, CHAT)


def test_a_tokenizer_template_of_its_own_is_kept(chat_tokenizer, tokenizer_copy, tmp_path):
    own = tokenizer_copy(chat_tokenizer, tmp_path)
    own.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert ensure_chat_template(own) is False
    assert own.chat_template.startswith("{% for m in messages %}{{ m")


# --- labels and rows ------------------------------------------------------------------------


def test_labels_cover_exactly_the_answers(chat_tokenizer):
    ids, labels = encode_example(chat_tokenizer, CHAT, 256, "left")
    trained = [t for t in labels if t != IGNORE_INDEX]
    eos = chat_tokenizer.eos_token
    assert chat_tokenizer.decode(trained) == f"Four.{eos}Six, of course.{eos}"
    assert [t for t, label in zip(ids, labels) if label != IGNORE_INDEX] == trained


@pytest.mark.parametrize(
    ("truncation", "expect"),
    [("left", "kept_answer"), ("right", "no_response_tokens"), ("drop", "too_long")],
)
def test_truncation_policies(chat_tokenizer, truncation, expect):
    long_prompt = [
        {"role": "user", "content": "word " * 80},
        {"role": "assistant", "content": "Yes."},
    ]
    result = encode_example(chat_tokenizer, long_prompt, 32, truncation)
    if expect == "kept_answer":
        ids, labels = result
        assert len(ids) == 32
        eos = chat_tokenizer.eos_token
        assert chat_tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == f"Yes.{eos}"
    else:
        assert result == expect


def test_packed_rows_restart_positions_and_never_target_across_examples():
    a = ([1, 2, 3], [IGNORE_INDEX, 2, 3])
    b = ([4, 5], [IGNORE_INDEX, 5])
    rows = pack_examples([a, b, a], seq_len=6, pad_id=0, packing=True)
    assert rows["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0], [1, 2, 3, 0, 0, 0]]
    assert rows["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert rows["labels"][0].tolist() == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5, IGNORE_INDEX]
    unpacked = pack_examples([a, b], seq_len=6, pad_id=0, packing=False)
    assert unpacked["input_ids"].tolist() == [[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0]]


def test_packed_examples_do_not_attend_to_each_other(chat_tokenizer, tiny_model):
    """The logits of each example inside a packed row equal those of the example alone."""
    first = encode_example(chat_tokenizer, CHAT[1:3], 64, "left")
    second = encode_example(chat_tokenizer, CHAT[3:], 64, "left")
    rows = pack_examples([first, second], 128, chat_tokenizer.pad_token_id, packing=True)
    assert len(rows["input_ids"]) == 1  # both in one row
    batch = {k: torch.from_numpy(v) for k, v in rows.items()}
    with torch.no_grad():
        packed = tiny_model(**model_inputs(batch, torch.device("cpu"))).logits[0]
        n1, n2 = len(first[0]), len(second[0])
        alone = tiny_model(input_ids=torch.tensor([second[0]])).logits[0]
    assert torch.allclose(packed[n1 : n1 + n2], alone, atol=1e-5)


# --- bad records ----------------------------------------------------------------------------


def _write_messy_jsonl(path):
    good = {"prompt": "Say hi.", "response": "Hi."}
    lines = [json.dumps(good)] * 16 + [
        "{not json",  # line 17
        json.dumps({"prompt": "No answer field."}),  # 18
        json.dumps({"prompt": "Blank.", "response": "   "}),  # 19
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),  # 20
        json.dumps({"messages": [{"role": "user", "content": "Only a question."}]}),  # 21
        json.dumps({"prompt": "word " * 80, "response": "ok"}),  # 22: too long for 32
    ]
    path.write_text("\n".join(lines) + "\n")


def test_bad_records_are_skipped_and_counted_by_reason(chat_tokenizer, tmp_path):
    path = tmp_path / "messy.jsonl"
    _write_messy_jsonl(path)
    cfg = SFTConfig(source="jsonl", paths=[str(path)], test_paths=[str(path)])
    bad = BadRecords()
    examples = list(iter_examples(cfg, "train", bad))
    assert len(examples) == 17  # 16 good + the over-long one (dropped later, by length)
    assert bad.counts == {
        "malformed_json": 1,
        "missing_field": 1,
        "empty_response": 1,
        "malformed_messages": 1,
        "no_assistant_turn": 1,
    }
    assert bad.where["malformed_json"] == ["messy.jsonl:17"]
    assert bad.where["no_assistant_turn"] == ["messy.jsonl:21"]


# --- embedded QA set ------------------------------------------------------------------------


def test_stdlib_qa_is_split_by_package():
    pairs = list(stdlib_qa_pairs())
    assert len(pairs) > 1000
    test_groups = {p["group"] for p in pairs if is_held_out(p["group"], 0.1)}
    cfg = SFTConfig()
    train = list(iter_examples(cfg, "train", BadRecords()))
    test = list(iter_examples(cfg, "test", BadRecords()))
    assert len(train) + len(test) == len(pairs) and len(test) > 100
    train_modules = {m[0]["content"].split("`")[1].split(".")[0] for _, m in train}
    test_modules = {m[0]["content"].split("`")[1].split(".")[0] for _, m in test}
    assert not train_modules & test_modules
    assert test_modules <= test_groups
    json_dumps = next(p for p in pairs if p["prompt"] == "What does `json.dumps` do?")
    assert json_dumps["response"].startswith("Serialize ``obj`` to a JSON formatted")
    # The held-out side read alone (decontamination, evaluation) is the same pairs, in order.
    held_out = list(stdlib_qa_pairs(keep_group=lambda group: is_held_out(group, 0.1)))
    assert held_out == [p for p in pairs if is_held_out(p["group"], 0.1)] and len(held_out) > 100


@pytest.mark.parametrize(
    ("doc", "answer"),
    [
        ("Return the sum of a and b. More text.", "Return the sum of a and b."),
        ("Split the pathname\ninto a pair.\n\nDetails.", "Split the pathname into a pair."),
        ("dumps(obj) -> str\n\nSerialize.", None),  # a signature
        ("Too short.", None),
    ],
)
def test_first_sentence(doc, answer):
    assert first_sentence(doc) == answer
