"""Real fine-tuning runs: `cluster.finetune.main` on the local Ray cluster (2 CPU workers,
DeepSpeed ZeRO-2 over gloo), full and LoRA, each ending in an export that plain
transformers loads, evaluated against its base; then `cluster.eval` on an export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tracked_runs import client_of, run_of, runs_in
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.eval import main as eval_main
from cluster.finetune import main as finetune_main
from rundir.metrics_file import read_metrics
from serve.export import DEFAULT_CHAT_TEMPLATE


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_export, pydoc_docs):
    root = tmp_path_factory.mktemp("finetune")
    corpus = root / "text"
    corpus.mkdir()
    for i in range(6):  # held-out text for perplexity: a few files of real English
        (corpus / f"part-{i}.txt").write_text("\n\n".join(d.text for d in pydoc_docs[i::6]))
    translation = root / "translation.jsonl"
    pairs = [("the cat sat", "le chat assis"), ("a red book", "un livre rouge")] * 3
    translation.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs))
    common = [
        f"model.name_or_path={tiny_export}",
        "data=text-files",
        f"data.paths=[{corpus}/*.txt]",
        "sft.max_examples=256",
        "epochs=null",
        "trainer.max_steps=20",
        "trainer.seq_len=64",
        "trainer.micro_batch_size=4",
        "trainer.log_every_steps=5",
        "trainer.eval_every_steps=10",
        "trainer.eval_batches=4",
        "trainer.checkpoint_every_steps=20",
        "optim.lr=3e-3",
        "eval.max_examples=16",
        "eval.max_new_tokens=8",
        "eval.batch_size=8",
        "eval.text_batches=2",
        "eval.lm_eval.limit=8",
        "eval.seq_len=32",
        "eval.num_samples=2",
        f"eval.translation_paths=[{translation}]",
        "experiment=ft",
        f"output_dir={root / 'runs'}",
        f"cache_dir={root / 'cache'}",
    ]
    return {"root": root, "common": common, "base": Path(tiny_export)}


def _finetune(setup, run_name: str, *extra: str) -> Path:
    assert finetune_main([*setup["common"], f"run_name={run_name}", *extra]) == 0
    return setup["root"] / "runs" / "ft" / run_name


@pytest.fixture(scope="module")
def full_run(ray_cluster, setup):
    return _finetune(setup, "full", "deepspeed=zero2")


@pytest.fixture(scope="module")
def lora_run(ray_cluster, setup):
    # The side-by-side evaluation is checked on the full run; this one ends with its summary,
    # untracked (the full run beside it is tracked).
    extra = ("lora.enabled=true", "lora.rank=4", "evaluate_at_end=false", "tracking=none")
    return _finetune(setup, "lora", "deepspeed=zero2", *extra)


def _loads_and_answers(export: Path) -> str:
    tokenizer = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What does `json.dumps` do?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    return tokenizer.decode(out[0])


def test_full_finetune_learns_the_responses_and_exports(full_run):
    rows = read_metrics(full_run / "metrics.jsonl")
    evals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert rows[-1]["step"] == 20 and len(evals) >= 2
    assert evals[-1] < evals[0] - 0.5  # held-out response loss falls
    export = full_run / "export"
    text = _loads_and_answers(export)
    assert text.startswith("<|user|>\nWhat does `json.dumps` do?\n<|assistant|>\n")
    # The template the run trained with travels with the export (serving formats with it).
    assert AutoTokenizer.from_pretrained(export).chat_template == DEFAULT_CHAT_TEMPLATE


def test_the_run_ends_with_base_and_finetuned_evaluated_side_by_side(full_run, setup):
    report = json.loads((full_run / "eval.json").read_text())
    assert set(report) == {"base", "fine-tuned"}
    assert report["base"]["export"] == str(setup["base"])
    for side in report.values():
        assert side["qa"]["examples"] == 16 and 0 <= side["qa"]["f1"] <= 100
        assert side["translation"]["examples"] == 6
        assert side["text"]["perplexity"] > 1
        assert [s["task"] for s in side["samples"]] == ["qa", "qa", "translation", "translation"]
    # Different weights, different held-out text perplexity, on one tokenization of the
    # text: the fine-tune tokenizes as its base does, so the text was prepared once.
    assert report["base"]["text"]["loss"] != report["fine-tuned"]["text"]["loss"]
    assert len(list((setup["root"] / "cache").glob("data-*"))) == 1
    # zeroray's offline lm-eval tasks ran on both, through lm-eval's HF backend.
    for side in report.values():
        lm = side["lm_eval"]
        assert set(lm) == {"zeroray_docstring_mc", "zeroray_pydoc_perplexity", "zeroray_bias_pairs"}
        assert all(task["documents"] == 8 for task in lm.values())
        assert 0 <= lm["zeroray_docstring_mc"]["acc"] <= 1
        assert 0 <= lm["zeroray_bias_pairs"]["pct_stereotype"] <= 1
    base, tuned = report["base"]["lm_eval"], report["fine-tuned"]["lm_eval"]
    assert base["zeroray_pydoc_perplexity"] != tuned["zeroray_pydoc_perplexity"]
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["exported"] and summary["eval_json"] == str(full_run / "eval.json")
    # The job's MLflow run holds the evaluation report; the export's model version names
    # the model it started from.
    run = run_of(full_run)
    client = client_of(setup["root"] / "runs")
    assert "eval.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    (version,) = client.search_model_versions("name='zeroray-ft'")
    assert version.tags["lineage.base_model"] == str(setup["base"])
    assert version.tags["lineage.run_id"] == run.info.run_id


def test_lora_export_is_merged_and_changes_only_the_adapted_weights(lora_run, setup):
    assert not (lora_run / "eval.json").exists()  # evaluate_at_end=false
    export = lora_run / "export"
    merged = load_file(export / "model.safetensors")
    base = load_file(setup["base"] / "model.safetensors")
    assert not [k for k in merged if "lora" in k]  # a plain checkpoint, no adapter left
    assert merged.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    # peft's default for GPT-2 adapts the fused attention projection (c_attn) only.
    assert changed and all(".attn.c_attn." in k for k in changed)
    _loads_and_answers(export)
    rows = read_metrics(lora_run / "metrics.jsonl")
    evals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert evals[-1] < evals[0]
    # tracking=none: no MLflow run (tests/unit/test_tracking.py: nor MLflow imported).
    assert not (lora_run / "tracking.json").exists()
    assert "tracking" not in json.loads((lora_run / "summary.json").read_text())
    assert "lora" not in {r.info.run_name for r in runs_in(setup["root"] / "runs", "ft")}


def test_make_eval_writes_a_report_for_an_export(ray_cluster, full_run, setup, capsys):
    out = setup["root"] / "report.json"
    args = [a for a in setup["common"] if a.startswith(("data", "eval.", "cache_dir"))]
    assert eval_main([f"export={full_run / 'export'}", f"output={out}", *args]) == 0
    report = json.loads(out.read_text())
    finetuned = json.loads((full_run / "eval.json").read_text())["fine-tuned"]
    # Same export, same items, greedy decoding: the same figures as the run's own evaluation.
    assert report["qa"] == finetuned["qa"]
    assert report["text"] == finetuned["text"]
    assert report["lm_eval"] == finetuned["lm_eval"]
    printed = capsys.readouterr().out
    assert "QA token F1 (%)" in printed and "BLEU" in printed
    assert "lm-eval docstring_mc acc" in printed and "lm-eval bias_pairs pct_stereotype" in printed


# --- the translation and summarization recipes --------------------------------------------
# A few steps each from the same tiny base: they show the wiring (recipe -> data -> metric of
# base and tuned, printed and in eval.json, predictions beside it, the recipe's lm-eval task
# on both exports), not learning; the README's measured runs show the tuned model better.
RECIPE_STEPS = [
    "epochs=null",
    "trainer.max_steps=4",
    "trainer.eval_every_steps=4",
    "trainer.eval_batches=1",
    "trainer.checkpoint_every_steps=4",
    "eval.max_examples=8",
    "eval.max_new_tokens=8",
    "eval.text_batches=1",
    "eval.num_samples=1",
    "eval.lm_eval.limit=4",
    "eval.lm_eval.max_gen_tokens=8",  # the tiny base has 64 positions
    "eval.translation_paths=[]",
]


def _recipe_run(setup, recipe: str, lm_eval_task: str, capsys) -> tuple[Path, str]:
    extra = [f"sft={recipe}", *RECIPE_STEPS, f"eval.lm_eval.tasks=[{lm_eval_task}]"]
    run = _finetune(setup, recipe, *extra)
    return run, capsys.readouterr().out


def _predictions(run: Path, model: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["model"] == model]
    assert len(mine) == 8 and {r["model"] for r in rows} == {"base", "fine-tuned"}
    return [r["output"] for r in mine], [r["reference"] for r in mine]


def test_translation_recipe_scores_base_and_tuned_with_sacrebleu(ray_cluster, setup, capsys):
    import sacrebleu

    run, printed = _recipe_run(setup, "translation", "zeroray_translation", capsys)
    report = json.loads((run / "eval.json").read_text())
    assert "BLEU" in printed and "chrF" in printed and "lm-eval translation bleu" in printed
    for model, side in report.items():
        outputs, references = _predictions(run, model)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in "".join(references))  # Chinese
        # The report's figures are sacrebleu's, recomputed from the saved predictions.
        bleu = sacrebleu.corpus_bleu(outputs, [references], tokenize="zh").score
        chrf = sacrebleu.corpus_chrf(outputs, [references]).score
        assert side["translation"] == {
            "bleu": bleu,
            "chrf": chrf,
            "tokenize": "zh",
            "examples": 8,
        }
        assert "qa" not in side and set(side["lm_eval"]["zeroray_translation"]) >= {"bleu", "chrf"}


def test_summarization_recipe_scores_an_export_with_rouge_score(
    ray_cluster, full_run, setup, capsys
):
    """`make eval ARGS="sft=summarization export=..."` on the full run's export: the recipe's
    ROUGE from rouge-score, equal to a recomputation from the saved predictions. (The recipe
    -> fine-tune -> base and tuned wiring is the translation test's, the same code; no second
    fine-tune run is paid for here.)"""
    from rouge_score.rouge_scorer import RougeScorer

    out = setup["root"] / "summarization.json"
    # The module's data and evaluation settings, the recipe tests' where they differ.
    settings = [a for a in setup["common"] if a.startswith(("data", "eval.", "cache_dir"))]
    settings += [a for a in RECIPE_STEPS if a.startswith("eval.")]
    args = list({a.split("=", 1)[0]: a for a in settings}.values())
    tasks = "eval.lm_eval.tasks=[zeroray_summarization]"
    argv = ["sft=summarization", f"export={full_run / 'export'}", f"output={out}", tasks]
    assert eval_main([*argv, *args]) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "ROUGE-1" in printed and "ROUGE-L" in printed and "lm-eval summarization" in printed
    rows = [json.loads(line) for line in out.with_name("summarization-predictions.jsonl").open()]
    assert len(rows) == 8 and {r["model"] for r in rows} == {"export"}
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for kind in ("rouge1", "rouge2", "rougeL"):
        per_item = [scorer.score(r["reference"], r["output"])[kind].fmeasure for r in rows]
        assert report["summarization"][kind] == pytest.approx(100 * sum(per_item) / 8)
    assert set(report["lm_eval"]["zeroray_summarization"]) >= {"rouge1", "rouge2", "rougeL"}
