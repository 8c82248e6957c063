"""Exports evaluated on the cluster, one Ray task each (CPUs or one GPU), on the same items:
`make eval` evaluates one, fine-tuning and DPO runs the starting model and the result."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.data import DataConfig, SFTConfig
from schemas.evaluation import EvalConfig


def evaluate_exports(
    exports: list[str], data: DataConfig, sft: SFTConfig, spec: EvalConfig, store: str
) -> list[dict]:
    """One report per export, all on the same items, each export in its own Ray task. The
    held-out text is prepared under ``store`` (prepared_dir: a path or a URI)."""
    import ray

    from evaluation.runner import evaluate_in_task
    from evaluation.tasks import file_translation_task, sft_task, text_dataset

    tasks = [sft_task(sft, spec.max_examples), file_translation_task(spec)]
    tasks = [t for t in tasks if t is not None]
    from rundir.node_cache import local_copy

    # The driver tokenizes the held-out text with each export's tokenizer (a URI export
    # fetched here); each task fetches its export, and the text, onto its own node.
    texts = [text_dataset(local_copy(e), data, spec, store) for e in exports]
    task = ray.remote(num_cpus=spec.num_cpus, num_gpus=1 if spec.use_gpu else 0, max_retries=0)(
        evaluate_in_task
    )
    # One after another: on a small machine two evaluations at once would only share CPUs.
    return [ray.get(task.remote(e, spec, t, tasks)) for e, t in zip(exports, texts)]


def save_predictions(reports: list[dict], names: list[str], path: Path) -> None:
    """Moves each report's generated answers into one JSON-lines file (a row per answer:
    model, task, prompt, reference, output), so the report stays readable and every task
    metric can be recomputed from the file."""
    with path.open("w", encoding="utf-8") as f:
        for name, report in zip(names, reports):
            for row in report.pop("predictions", []):
                f.write(json.dumps({"model": name, **row}, ensure_ascii=False) + "\n")
