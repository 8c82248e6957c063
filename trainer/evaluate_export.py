"""Evaluate a Hugging Face export: perplexity on held-out text, QA and translation metrics
from batched greedy generation, and a sample table. Plain transformers, no DeepSpeed: what
is measured is the export exactly as users and the serving layer load it. Runs inside a
Ray task (cluster/evaluation.py) or anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.chat_template import DEFAULT_CHAT_TEMPLATE
from trainer.evaluate import evaluate_loss
from trainer.finetune_config import EvalSpec
from trainer.loader import build_dataloader, load_split
from trainer.text_metrics import qa_scores, translation_scores


@dataclass
class TaskItem:
    messages: list[dict]  # the conversation up to the answer
    reference: str


def load_export(export_dir: str, device: torch.device):
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE  # what serving falls back to as well
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only batches continue from the right edge
    model = AutoModelForCausalLM.from_pretrained(export_dir).to(device).eval()
    return model, tokenizer


@torch.no_grad()
def generate_greedy(
    model, tokenizer, items: list[TaskItem], spec: EvalSpec, desc: str
) -> list[str]:
    """Answers to every item, ``spec.batch_size`` prompts per left-padded generate call."""
    context = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions
    max_prompt = context - spec.max_new_tokens
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


def text_perplexity(model, dataset_dir: str, spec: EvalSpec, device: torch.device) -> dict:
    rows = load_split(dataset_dir, "validation")
    loader = build_dataloader(rows, min(8, len(rows)), 0, 1, seed=0, shuffle=False)
    batches = min(spec.text_batches, len(loader))
    result = evaluate_loss(model, tqdm(loader, total=batches, desc="perplexity"), batches, device)
    return {"loss": result["val_loss"], "perplexity": result["val_ppl"], "sequences": batches * 8}


def evaluate_export(
    export_dir: str,
    spec: EvalSpec,
    text_dataset_dir: str | None,
    qa_items: list[TaskItem],
    translation_items: list[TaskItem],
) -> dict:
    """The report of one export: every metric whose data was given, plus samples."""
    device = torch.device("cuda" if spec.use_gpu and torch.cuda.is_available() else "cpu")
    model, tokenizer = load_export(export_dir, device)
    report: dict = {"export": export_dir, "parameters": model.num_parameters()}
    if text_dataset_dir:
        report["text"] = text_perplexity(model, text_dataset_dir, spec, device)
    samples = []
    for task, items, score in (
        ("qa", qa_items, qa_scores),
        ("translation", translation_items, translation_scores),
    ):
        if not items:
            continue
        outputs = generate_greedy(model, tokenizer, items, spec, desc=f"generate {task}")
        report[task] = score(outputs, [it.reference for it in items])
        samples += [
            {
                "task": task,
                "prompt": it.messages[-1]["content"],
                "reference": it.reference,
                "output": out,
            }
            for it, out in list(zip(items, outputs))[: spec.num_samples]
        ]
    report["samples"] = samples
    return report
