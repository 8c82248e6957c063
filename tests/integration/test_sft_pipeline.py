"""Fine-tuning data through the Ray Data pipeline (dataprep/pipelines/sft.py) on the local
cluster: labels on answers only in the written shards, bad records counted by reason with
their locations, exact duplicates (a training copy of a held-out example goes), cleaning,
PII masking only when asked, byte-identical shards on a rerun."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from chat_examples import CHAT
from transformers import AutoTokenizer

from dataprep.prepare import prepare_sft_data
from dataprep.tokens.chat import IGNORE_INDEX
from schemas.data import SFTConfig
from schemas.fields import ConfigError
from trainer.loader import load_split
from trainer.step import model_inputs

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture
def tok_dir(chat_tokenizer, tmp_path) -> str:
    chat_tokenizer.save_pretrained(tmp_path / "tok")
    return str(tmp_path / "tok")


def _jsonl(path: Path, records: list) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return str(path)


def _decoded_answers(prepared, tok_dir: str, split: str) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    rows = load_split(prepared.dataset_dir, split)
    out = []
    for row in rows:
        labels = row["labels"]
        out.append(tokenizer.decode(labels[labels != IGNORE_INDEX]))
    return out


def test_prompt_tokens_never_contribute_to_the_loss(tok_dir, chat_tokenizer, tiny_model, tmp_path):
    """On rows read back from the shards: the model's loss is the cross-entropy of the
    answer tokens alone."""
    records = [{"messages": CHAT[:1] + [{**m} for m in CHAT[1:]]} for _ in range(12)]
    for i, record in enumerate(records):  # distinct examples: none is a duplicate
        record["messages"][1]["content"] = f"Question {i}: what is 2 + 2?"
    path = _jsonl(tmp_path / "chat.jsonl", records)
    cfg = SFTConfig(source="jsonl", paths=[path], test_paths=[path], dedup=False)
    prepared = prepare_sft_data(cfg, tok_dir, 64, str(tmp_path / "cache"))
    assert prepared.stats["train"]["examples"] == 12
    rows = load_split(prepared.dataset_dir, "train")
    batch = rows[:4]
    with torch.no_grad():
        loss = tiny_model(**model_inputs(batch, torch.device("cpu"))).loss
        logits = tiny_model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    by_hand = F.cross_entropy(logits[:, :-1][mask], targets[mask])
    assert torch.allclose(loss, by_hand, atol=1e-5)
    answers = chat_tokenizer("Four.<|endoftext|>Six, of course.<|endoftext|>")["input_ids"]
    assert set(targets[mask].tolist()) <= set(answers)
    assert prepared.stats["chat_template"] == "tokenizer's own"


def _messy(path: Path) -> str:
    good = [{"prompt": f"Say hi {i}.", "response": "Hi."} for i in range(16)]
    return _jsonl(
        path,
        good
        + [
            "{not json",  # line 17
            {"prompt": "No answer field."},  # 18
            {"prompt": "Blank.", "response": "   "},  # 19
            {"messages": [{"role": "robot", "content": "x"}]},  # 20
            {"messages": [{"role": "user", "content": "Only a question."}]},  # 21
            {"prompt": "word " * 80, "response": "ok"},  # 22: too long for 48
        ],
    )


def test_bad_records_are_counted_by_reason_and_too_many_fail(tok_dir, tmp_path):
    path = _messy(tmp_path / "messy.jsonl")
    strict = SFTConfig(
        source="jsonl", paths=[path], test_paths=[path], truncation="drop", max_bad_fraction=0.2
    )
    with pytest.raises(ConfigError, match=r"sft.max_bad_fraction=0.2: 6 of 22 .*too_long"):
        prepare_sft_data(strict, tok_dir, 48, str(tmp_path / "cache"))
    lenient = SFTConfig(**{**strict.__dict__, "max_bad_fraction": 0.3})
    # The same file on both sides: every training example is a copy of a held-out one.
    with pytest.raises(ConfigError, match=r"every usable train example is a copy .*16 removed"):
        prepare_sft_data(lenient, tok_dir, 48, str(tmp_path / "cache"))
    keep_copies = SFTConfig(**{**lenient.__dict__, "dedup": False})
    prepared = prepare_sft_data(keep_copies, tok_dir, 48, str(tmp_path / "cache"))
    bad = prepared.stats["train"]["bad_records"]
    assert (bad["records"], bad["bad"], bad["by_reason"]["too_long"]) == (22, 6, 1)
    assert bad["first"]["too_long"] == ["messy.jsonl:22"]
    assert bad["first"]["malformed_json"] == ["messy.jsonl:17"]
    assert prepared.stats["train"]["examples"] == prepared.stats["validation"]["examples"] == 16


def test_duplicates_cleaning_and_pii_only_when_asked(tok_dir, tmp_path):
    held_out = [{"prompt": f"Held-out question {i}?", "response": f"Answer {i}."} for i in range(5)]
    train = [{"prompt": f"Train question {i}?", "response": f"Reply {i}."} for i in range(30)]
    train += train[:4]  # 4 copies inside the training split
    train += held_out[:3]  # 3 copies of held-out examples
    # Decomposed "é" (e + combining accent) and a control character: cleaned to one form,
    # so this record is the same example as the next one.
    train.append({"prompt": "Cafe\u0301 menu?\x07", "response": "Write to chef@example.com."})
    train.append({"prompt": "Café menu?", "response": "Write to chef@example.com."})
    cfg = SFTConfig(
        source="jsonl",
        paths=[_jsonl(tmp_path / "train.jsonl", train)],
        test_paths=[_jsonl(tmp_path / "test.jsonl", held_out)],
    )
    prepared = prepare_sft_data(cfg, tok_dir, 64, str(tmp_path / "cache"))
    stats = prepared.stats
    assert stats["train"]["duplicates_removed"] == 4 + 3 + 1
    assert stats["train"]["examples"] == 30 + 1
    assert stats["validation"]["examples"] == 5
    answers = " ".join(_decoded_answers(prepared, tok_dir, "train"))
    assert "chef@example.com" in answers  # sft.pii is off by default
    for i in range(3):
        assert f"Answer {i}." not in answers  # the held-out answers are not trained on

    masked = SFTConfig(**{**cfg.__dict__, "pii": True})
    again = prepare_sft_data(masked, tok_dir, 64, str(tmp_path / "cache"))
    answers = " ".join(_decoded_answers(again, tok_dir, "train"))
    assert "chef@example.com" not in answers and "<EMAIL>" in answers

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    prompts = tokenizer.decode(load_split(prepared.dataset_dir, "train")[-1]["input_ids"])
    assert unicodedata.normalize("NFC", "Café") in prompts and "\x07" not in prompts


def test_a_rerun_writes_the_same_bytes(tok_dir, tmp_path):
    records = [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(300)]
    cfg = SFTConfig(source="jsonl", paths=[_jsonl(tmp_path / "qa.jsonl", records)])
    first = prepare_sft_data(cfg, tok_dir, 64, str(tmp_path / "a"))
    second = prepare_sft_data(cfg, tok_dir, 64, str(tmp_path / "b"))
    assert first.stats == second.stats and first.stats["validation"]["examples"] > 10
    for split in ("train", "validation"):
        a = sorted((Path(first.dataset_dir) / split).glob("*.parquet"))
        b = sorted((Path(second.dataset_dir) / split).glob("*.parquet"))
        assert a and [f.read_bytes() for f in a] == [f.read_bytes() for f in b]


def test_a_datasets_source_by_its_splits_or_held_out_by_row(tok_dir, tmp_path):
    """sft=hf-dataset on a local directory (the hub code path with a local name)."""
    data = tmp_path / "qa-dataset"
    data.mkdir()
    pairs = [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(200)]
    _jsonl(data / "train.jsonl", pairs[:150])
    _jsonl(data / "test.jsonl", pairs[150:])
    by_split = SFTConfig(source="hf-dataset", hf_name=str(data), hf_test_split="test")
    prepared = prepare_sft_data(by_split, tok_dir, 64, str(tmp_path / "cache"))
    assert (prepared.stats["train"]["examples"], prepared.stats["validation"]["examples"]) == (
        150,
        50,
    )
    assert "Answer 160." in " ".join(_decoded_answers(prepared, tok_dir, "validation"))
    held_out = SFTConfig(source="hf-dataset", hf_name=str(data), test_fraction=0.2)
    prepared = prepare_sft_data(held_out, tok_dir, 64, str(tmp_path / "cache"))
    train, test = prepared.stats["train"]["examples"], prepared.stats["validation"]["examples"]
    assert train + test == 150 and 10 <= test <= 50
