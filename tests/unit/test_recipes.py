"""The translation and summarization recipes' data, held-out splits and metrics: Django's
.po catalogs read with polib, stdlib docstrings read with ast, sacrebleu and rouge-score
figures, and the lm-eval tasks that score with the same functions."""

from __future__ import annotations

import re

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from cluster.schema import load_config
from dataprep.bad_records import BadRecords
from dataprep.filters.decontam import shipped_items
from dataprep.readers.chat_formats import iter_examples
from dataprep.readers.embedded.summarization import stdlib_summary_pairs, summary_and_body
from dataprep.readers.embedded.translation import language_name, translation_pairs
from evaluation.lm_eval_tasks import zeroray_data
from evaluation.tasks import sft_task
from evaluation.text_metrics import bleu_tokenization, summarization_scores, translation_scores
from schemas.data import SFTConfig
from schemas.fields import ConfigError

HAN = re.compile(r"[\u4e00-\u9fff]")
BASE = ["model.name_or_path=gpt2"]  # composing a fine-tuning config needs a named base


def _sources(cfg: SFTConfig, split: str) -> list[str]:
    return [m[0]["content"] for _, m in iter_examples(cfg, split, BadRecords())]


def test_translation_pairs_are_human_chinese_held_out_by_source_string():
    pairs = list(translation_pairs())
    assert len(pairs) > 600
    assert len({p["source"] for p in pairs}) == len(pairs)  # each English message once
    assert sum(bool(HAN.search(p["response"])) for p in pairs) > 0.95 * len(pairs)
    assert language_name("zh_Hans") == "Simplified Chinese"
    cfg = SFTConfig(source="translation")
    train, test = _sources(cfg, "train"), _sources(cfg, "test")
    assert len(train) + len(test) == len(pairs) and 40 < len(test) < 150
    assert not set(train) & set(test)
    assert all(t.startswith("Translate into Simplified Chinese: ") for t in test)


def test_another_target_language_is_a_setting_and_a_wrong_one_one_line():
    german = list(translation_pairs("de"))
    assert len(german) > 600 and german[0]["prompt"].startswith("Translate into German: ")
    with pytest.raises(ConfigError, match=r"^sft.target_language='klingon' is not allowed"):
        SFTConfig(source="translation", target_language="klingon")


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            "Return the sum of two numbers.\n\nBoth are added with the plus operator, and the "
            "result is returned to the caller as is.",
            "Return the sum of two numbers.",
        ),
        ("One line only, with no body at all.", None),
        ("Summary line here\nsecond line of it\n\nbody " + "word " * 20, None),  # no blank line
        ("f(x) -> int\n\n" + "word " * 20, None),  # a signature, not a summary
        ("Return the sum of two numbers.\n\nToo short a body.", None),
    ],
)
def test_summary_and_body_follow_pep_257(doc, expected):
    shaped = summary_and_body(doc)
    assert (shaped[0] if shaped else None) == expected


def test_summarization_pairs_are_held_out_by_module():
    pairs = list(stdlib_summary_pairs())
    assert len(pairs) > 1000
    cfg = SFTConfig(source="summarization")
    examples = {
        split: [
            (m[0]["content"], m[1]["content"]) for _, m in iter_examples(cfg, split, BadRecords())
        ]
        for split in ("train", "test")
    }
    module_of = {p["prompt"]: p["module"] for p in pairs}
    train_modules = {module_of[p] for p, _ in examples["train"]}
    test_modules = {module_of[p] for p, _ in examples["test"]}
    assert test_modules and not train_modules & test_modules
    prompt, summary = examples["test"][0]
    assert prompt.startswith("Summarize in one line:\n\n") and "\n" not in summary


def test_bleu_uses_the_zh_tokenization_for_chinese():
    assert bleu_tokenization("zh_Hans") == "zh" and bleu_tokenization("de") == "13a"
    refs, outs = (
        ["请输入一个有效的电子邮件地址。", "这个字段是必填项。"],
        ["请输入有效的电子邮件地址。", "字段是必填项。"],
    )
    scores = translation_scores(outs, refs, tokenize="zh")
    assert scores["bleu"] == sacrebleu.corpus_bleu(outs, [refs], tokenize="zh").score
    # Without it, a Chinese sentence is one "word": a near miss scores nothing.
    assert scores["bleu"] > 20 and translation_scores(outs, refs)["bleu"] < scores["bleu"]
    assert translation_scores(refs, refs, tokenize="zh")["bleu"] == pytest.approx(100)


def test_rouge_is_rouge_scores_stemmed_f_measure_mean():
    refs = ["Return the sorted list of items.", "Open a file for reading."]
    outs = ["Returns a sorted list.", "Close the file."]
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = summarization_scores(outs, refs)
    for kind in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(scorer.score(r, o)[kind].fmeasure for r, o in zip(refs, outs)) / 2
        assert scores[kind] == pytest.approx(expected)
    assert scores["rouge1"] > 0  # "Returns" meets "Return" through the stemmer


def test_each_recipe_evaluates_with_its_metric():
    items = ["请输入", "字段"]
    task = sft_task(SFTConfig(source="translation"), 5)
    assert task.name == "translation" and len(task.items) == 5
    assert task.score(items, items)["tokenize"] == "zh"
    assert sft_task(SFTConfig(source="summarization"), 3).name == "summarization"
    assert sft_task(SFTConfig(), 3).name == "qa"


def test_the_lm_eval_tasks_hold_the_recipes_test_splits_and_score_the_same():
    rows = zeroray_data.translation_held_out()["test"]
    held_out = sft_task(SFTConfig(source="translation"), 10_000).items
    assert [r["reference"] for r in rows] == [it.reference for it in held_out]
    summaries = zeroray_data.summarization_held_out()["test"]
    assert len(summaries) == len(sft_task(SFTConfig(source="summarization"), 10_000).items)
    docs = [{"reference": "返回排序的列表。"}, {"reference": "打开文件。"}]
    outputs = ["返回列表。", "关闭文件。 "]
    items = [zeroray_data.translation_result(d, [o])["bleu"] for d, o in zip(docs, outputs)]
    stripped = [o.strip() for o in outputs]
    refs = [d["reference"] for d in docs]
    assert zeroray_data.corpus_bleu_zh(items) == translation_scores(stripped, refs, "zh")["bleu"]
    assert zeroray_data.rougeL(items) == summarization_scores(stripped, refs)["rougeL"]


def test_recipes_compose_for_finetuning_and_evaluation():
    for recipe in ("translation", "summarization"):
        cfg = load_config("finetune", [f"sft={recipe}", *BASE])
        assert cfg.sft.source == recipe and cfg.eval.max_new_tokens != 48
        assert load_config("eval", [f"sft={recipe}"]).sft.source == recipe
    assert load_config("finetune", BASE).sft.source == "stdlib-qa"


def test_decontamination_covers_the_recipes_it_is_told_to():
    assert load_config("train", []).data.decontam.recipes == ["stdlib-qa", "translation"]
    items = list(shipped_items(["translation", "summarization"]))
    assert any(w.startswith("translation test") and HAN.search(t) for w, t in items)
    bodies = [t for w, t in items if w.startswith("summarization test") and len(t) > 100]
    assert bodies
    with pytest.raises(ConfigError, match="data.decontam.recipes"):
        load_config("train", ["data.decontam.recipes=[poetry]"])


def test_the_translation_recipe_and_a_translation_file_are_one_or_the_other():
    overrides = ["sft=translation", "eval.translation_paths=[pairs.jsonl]"]
    with pytest.raises(ConfigError, match=r"^eval.translation_paths=.* is not allowed"):
        load_config("finetune", [*overrides, *BASE])
    with pytest.raises(ConfigError, match=r"^eval.translation_paths="):
        load_config("eval", overrides)
