"""Exports evaluated on the cluster, one Ray task each (CPUs or one GPU), on the same items:
`make eval` evaluates one, fine-tuning and DPO runs the starting model and the result."""

from __future__ import annotations

from schemas.data import DataConfig, SFTConfig
from schemas.evaluation import EvalConfig


def evaluate_exports(
    exports: list[str], data: DataConfig, sft: SFTConfig, spec: EvalConfig, cache_dir: str
) -> list[dict]:
    """One report per export, all on the same items, each export in its own Ray task."""
    import ray

    from evaluation.runner import evaluate_in_task
    from evaluation.tasks import qa_items, text_dataset, translation_items

    qa = qa_items(sft, spec.max_examples)
    translation = translation_items(spec)
    from rundir.node_cache import local_copy

    # The driver tokenizes the held-out text with each export's tokenizer (a URI export
    # fetched here); each task fetches its export onto its own node.
    texts = [text_dataset(local_copy(e), data, spec, cache_dir) for e in exports]
    task = ray.remote(num_cpus=spec.num_cpus, num_gpus=1 if spec.use_gpu else 0, max_retries=0)(
        evaluate_in_task
    )
    # One after another: on a small machine two evaluations at once would only share CPUs.
    return [ray.get(task.remote(e, spec, t, qa, translation)) for e, t in zip(exports, texts)]
