"""Config section of the evaluation of an export (evaluation/ reads it, in a Ray task)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.fields import at_least, positive, setting

SHIPPED_LM_EVAL_TASKS = ("zeroray_docstring_mc", "zeroray_pydoc_perplexity", "zeroray_bias_pairs")


def _shipped_tasks() -> list[str]:
    return list(SHIPPED_LM_EVAL_TASKS)


@dataclass
class LmEvalConfig:
    tasks: list[str] = setting(
        factory=_shipped_tasks,
        help="lm-evaluation-harness tasks: zeroray's offline ones (zeroray_docstring_mc, "
        "zeroray_pydoc_perplexity, zeroray_bias_pairs, zeroray_docstring_qa, "
        "zeroray_translation: BLEU/chrF, zeroray_summarization: ROUGE) or any lm-eval "
        "task name (hellaswag, arc_easy... need hub access); [] = none",
    )
    limit: int | None = setting(None, "documents per task, for quick runs; null = all")
    num_fewshot: int | None = setting(None, "few-shot examples; null = each task's default")
    batch_size: int = setting(16, "requests per forward pass (export) or per HTTP request")
    max_gen_tokens: int | None = setting(
        None,
        "generation tasks' token budget (lm-eval's max_gen_toks) over each task's own, for "
        "a model whose context is shorter; null = the task's",
    )
    include_path: list[str] = setting(
        factory=list, help="directories of your own lm-eval task YAMLs, beside zeroray's"
    )

    def __post_init__(self) -> None:
        positive("eval.lm_eval.batch_size", self.batch_size)
        if self.max_gen_tokens is not None:
            positive("eval.lm_eval.max_gen_tokens", self.max_gen_tokens)
        if self.limit is not None:
            positive("eval.lm_eval.limit", self.limit)
        if self.num_fewshot is not None:
            at_least("eval.lm_eval.num_fewshot", self.num_fewshot, 0)


@dataclass
class EvalConfig:
    max_examples: int = setting(200, "held-out QA / translation examples generated per model")
    max_new_tokens: int = setting(48, "greedy decoding budget per answer")
    batch_size: int = setting(32, "prompts per left-padded generate call")
    text_batches: int = setting(20, "batches of 8 held-out text sequences for perplexity")
    seq_len: int = setting(128, "tokens per perplexity sequence")
    num_samples: int = setting(5, "rows of the prompt / reference / output table")
    translation_paths: list[str] = setting(
        factory=list, help="JSONL globs with source/target pairs: adds BLEU and chrF"
    )
    source_field: str = setting("source", "translation JSONL: the field translated from")
    target_field: str = setting("target", "translation JSONL: the reference translation")
    num_cpus: int = setting(2, "CPUs of the Ray task that evaluates (its torch threads)")
    use_gpu: bool = setting(False, "evaluate on one GPU of the cluster instead")
    lm_eval: LmEvalConfig = setting(
        factory=LmEvalConfig, help="lm-evaluation-harness tasks run on the export (HF backend)"
    )

    def __post_init__(self) -> None:
        for key in ("max_examples", "max_new_tokens", "batch_size", "text_batches", "seq_len"):
            positive(f"eval.{key}", getattr(self, key))
        positive("eval.num_cpus", self.num_cpus)
        at_least("eval.num_samples", self.num_samples, 0)
