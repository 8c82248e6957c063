"""Driver side of evaluation: gather held-out data, evaluate exports as Ray tasks, print.

Used by `make eval` (cluster/eval.py) and at the end of every fine-tuning run
(cluster/finetune.py), which evaluates the base model and the fine-tuned one on the same
items and prints them side by side.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from trainer.config import ConfigError, DataConfig, TokenizerConfig
from trainer.data import prepare_data
from trainer.evaluate_export import TaskItem, evaluate_export
from trainer.finetune_config import EvalSpec, SFTDataConfig
from trainer.sft_data import BadRecords, iter_examples


def qa_items(sft: SFTDataConfig, limit: int) -> list[TaskItem]:
    """The held-out split's first ``limit`` conversations, cut before their last answer."""
    items = []
    for _, messages in iter_examples(sft, "test", BadRecords()):
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        items.append(TaskItem(messages[:last], messages[last]["content"]))
        if len(items) >= limit:
            break
    return items


def translation_items(spec: EvalSpec) -> list[TaskItem]:
    """source/target JSONL: the source is the user turn, the target the reference."""
    items = []
    for pattern in spec.translation_paths:
        paths = sorted(glob.glob(pattern, recursive=True))
        if not paths:
            raise ConfigError(f"eval.translation_paths: {pattern!r} matches no file")
        for path in map(Path, paths):
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if spec.source_field not in row or spec.target_field not in row:
                    raise ConfigError(
                        f"eval.translation_paths: {path}:{line_no} lacks "
                        f"{spec.source_field!r}/{spec.target_field!r} (eval.source_field, "
                        "eval.target_field name them)"
                    )
                user = {"role": "user", "content": row[spec.source_field]}
                items.append(TaskItem([user], row[spec.target_field]))
    return items[: spec.max_examples]


def text_dataset(export: str, data: DataConfig, spec: EvalSpec, cache_dir: str) -> str:
    """Held-out text (the data config's validation split) in the export's own tokens."""
    tokenizer = TokenizerConfig(kind="pretrained", name_or_path=export)
    return prepare_data(data, tokenizer, spec.seq_len, cache_dir, export).dataset_dir


def evaluate_exports(
    exports: list[str], data: DataConfig, sft: SFTDataConfig, spec: EvalSpec, cache_dir: str
) -> list[dict]:
    """One report per export, all on the same items, each export in its own Ray task."""
    import ray

    qa = qa_items(sft, spec.max_examples)
    translation = translation_items(spec)
    texts = [text_dataset(e, data, spec, cache_dir) for e in exports]
    task = ray.remote(num_cpus=spec.num_cpus, num_gpus=1 if spec.use_gpu else 0, max_retries=0)(
        _evaluate
    )
    # One after another: on a small machine two evaluations at once would only share CPUs.
    return [ray.get(task.remote(e, spec, t, qa, translation)) for e, t in zip(exports, texts)]


def _evaluate(export, spec, text_dir, qa, translation) -> dict:
    import torch

    torch.set_num_threads(spec.num_cpus)
    return evaluate_export(export, spec, text_dir, qa, translation)


METRICS = (
    ("text", "perplexity", "held-out text perplexity", "{:.1f}"),
    ("text", "loss", "held-out text loss", "{:.3f}"),
    ("qa", "exact_match", "QA exact match (%)", "{:.1f}"),
    ("qa", "f1", "QA token F1 (%)", "{:.1f}"),
    ("translation", "bleu", "BLEU", "{:.2f}"),
    ("translation", "chrf", "chrF", "{:.2f}"),
)


def format_reports(reports: list[dict], names: list[str]) -> str:
    """A metrics table with one column per export, then each export's sample answers."""
    width = max(len(n) for n in names) + 2
    lines = ["metric".ljust(28) + "".join(n.rjust(width) for n in names)]
    for section, key, label, fmt in METRICS:
        if all(section in r for r in reports):
            cells = [fmt.format(r[section][key]).rjust(width) for r in reports]
            lines.append(label.ljust(28) + "".join(cells))
    for name, report in zip(names, reports):
        if report["samples"]:
            lines.append(f"\nsamples ({name}):")
        for s in report["samples"]:
            lines += [
                f"  [{s['task']}] {_clip(s['prompt'])}",
                f"    reference: {_clip(s['reference'])}",
                f"    output:    {_clip(s['output'])}",
            ]
    return "\n".join(lines)


def _clip(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
