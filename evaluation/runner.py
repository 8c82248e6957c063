"""Evaluate a Hugging Face export: perplexity on held-out text, the task metrics (QA,
translation, summarization) of batched greedy generation with every prediction kept, and a
sample table. Plain transformers, no DeepSpeed: the export is loaded by the serving layer's
own loader (serve/export.py), so what is measured is what `make serve` generates. Runs
inside a Ray task (cluster/training/export_eval.py) or anywhere else.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from evaluation.tasks import EvalTask, TaskItem
from rundir.node_cache import local_copy, local_prepared
from schemas.evaluation import EvalConfig
from serve.export import LoadedExport, load_export
from trainer.loader import build_dataloader, load_split
from trainer.step import evaluate_loss


@torch.no_grad()
def generate_greedy(
    export: LoadedExport, items: list[TaskItem], spec: EvalConfig, desc: str
) -> list[str]:
    """Answers to every item, ``spec.batch_size`` prompts per left-padded generate call."""
    model, tokenizer = export.model, export.tokenizer
    max_prompt = export.context_length - spec.max_new_tokens
    tokenizer.truncation_side = "left"  # an over-long prompt loses its start, not its question
    outputs: list[str] = []
    for start in tqdm(range(0, len(items), spec.batch_size), desc=desc, unit="batch"):
        batch = items[start : start + spec.batch_size]
        prompts = [
            tokenizer.apply_chat_template(it.messages, tokenize=False, add_generation_prompt=True)
            for it in batch
        ]
        inputs = tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_prompt,
            add_special_tokens=False,
        ).to(model.device)
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=spec.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        outputs += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return outputs


def text_perplexity(model, dataset_dir: str, spec: EvalConfig, device: torch.device) -> dict:
    rows = load_split(dataset_dir, "validation")
    loader = build_dataloader(rows, min(8, len(rows)), 0, 1, seed=0, shuffle=False)
    batches = min(spec.text_batches, len(loader))
    result = evaluate_loss(model, tqdm(loader, total=batches, desc="perplexity"), batches, device)
    return {"loss": result["val_loss"], "perplexity": result["val_ppl"], "sequences": batches * 8}


def evaluate_export(
    export_dir: str,
    spec: EvalConfig,
    text_dataset_dir: str | None,
    tasks: list[EvalTask],
) -> dict:
    """The report of one export: every metric whose data was given, samples, and under
    "predictions" every generated answer with its prompt and reference (the driver saves
    them beside the report, so that a metric can be recomputed from them)."""
    device = torch.device("cuda" if spec.use_gpu and torch.cuda.is_available() else "cpu")
    export = load_export(export_dir, device=device)
    report: dict = {"export": export_dir, "parameters": export.model.num_parameters()}
    if text_dataset_dir:
        report["text"] = text_perplexity(export.model, text_dataset_dir, spec, device)
    samples, predictions = [], []
    for task in tasks:
        if not task.items:
            continue
        outputs = generate_greedy(export, task.items, spec, desc=f"generate {task.name}")
        report[task.name] = task.score(outputs, [it.reference for it in task.items])
        rows = [
            {
                "task": task.name,
                "prompt": it.messages[-1]["content"],
                "reference": it.reference,
                "output": out,
            }
            for it, out in zip(task.items, outputs)
        ]
        samples += rows[: spec.num_samples]
        predictions += rows
    report["samples"] = samples
    report["predictions"] = predictions
    if spec.lm_eval.tasks:
        from evaluation.lm_eval_runner import on_export

        report["lm_eval"] = on_export(
            export_dir, spec.lm_eval, device.type, export.context_length, export.tokenizer
        )
    return report


def evaluate_in_task(export, spec: EvalConfig, text_dir, tasks: list[EvalTask]) -> dict:
    """The body of the Ray task that evaluates one export on its reserved CPUs."""
    torch.set_num_threads(spec.num_cpus)
    # An export, or the held-out text, at a URI is fetched onto this task's node (once per
    # node).
    text_dir = local_prepared(text_dir) if text_dir else text_dir
    return evaluate_export(local_copy(export), spec, text_dir, tasks)
