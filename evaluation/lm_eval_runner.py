"""lm-evaluation-harness as a backend of `make eval`: its tasks (zeroray's offline ones in
lm_eval_tasks/, or any task by name) on an export through lm-eval's Hugging Face backend, or
on a running zeroray endpoint through its OpenAI-compatible backends, as users point lm-eval
at vLLM: log-likelihood tasks through `local-completions` (token-id prompts, echo, logprobs;
the endpoint's /tokenize for its tokenizer), generation tasks through
`local-chat-completions`. Results are flattened to {task: {metric: value}}.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from rundir import layout
from schemas.evaluation import LmEvalConfig

TASKS_DIR = Path(__file__).resolve().with_name("lm_eval_tasks")


def task_manager(spec: LmEvalConfig):
    """lm-eval's index of the tasks ``spec`` names: zeroray's and ``include_path``'s, and
    lm-eval's own (about 15,000 YAML files, 5-20 s to index here) only when a task asks for
    one of them. Built once per process for the same paths and tasks."""
    return _task_manager(tuple(spec.include_path), tuple(spec.tasks))


@functools.cache
def _task_manager(include_path: tuple[str, ...], tasks: tuple[str, ...]):
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR), *include_path]
    ours = TaskManager(include_path=paths, include_defaults=False)
    if set(tasks) <= set(ours.all_tasks):
        return ours
    return TaskManager(include_path=paths)


def flatten(results: dict) -> dict:
    """{task: {metric: value}} from simple_evaluate's results: the "none" filter's figures,
    without standard errors (not computed: bootstrap_iters=0) and bookkeeping keys."""
    flat = {}
    for task, values in results["results"].items():
        flat[task] = {
            key.split(",")[0]: value
            for key, value in values.items()
            if key.endswith(",none") and "_stderr" not in key and isinstance(value, (int, float))
        }
        flat[task]["documents"] = results.get("n-samples", {}).get(task, {}).get("effective")
    return flat


def _evaluate(
    model: str,
    model_args: dict,
    tasks: list[str],
    spec: LmEvalConfig,
    secret: dict | None = None,
    **extra,
):
    """``secret``: model arguments built into the model here, so that lm-eval, handed the
    built model, neither logs them nor records them in its results (its model_args are)."""
    import lm_eval

    lm = model
    if secret:
        from lm_eval.api.registry import get_model

        lm = get_model(model).create_from_arg_obj(
            {**model_args, **secret}, {"batch_size": spec.batch_size}
        )
        model_args = None
    if spec.max_gen_tokens is not None:
        extra["gen_kwargs"] = {"max_gen_toks": spec.max_gen_tokens}
    return lm_eval.simple_evaluate(
        model=lm,
        model_args=model_args,
        tasks=tasks,
        task_manager=task_manager(spec),
        num_fewshot=spec.num_fewshot,
        limit=spec.limit,
        batch_size=spec.batch_size,
        bootstrap_iters=0,
        **extra,
    )


def on_export(
    export_dir: str, spec: LmEvalConfig, device: str, context_length: int, tokenizer=None
) -> dict:
    """The tasks on an export with lm-eval's Hugging Face backend, in this process.
    Generation tasks go through the chat template of ``tokenizer`` (the export's, or the
    default one serving gives an export without one), as an endpoint's chat route does, so
    that an export and its endpoint answer the same prompts."""
    if not spec.tasks:
        return {}
    from serve.export import adapter_base

    # A LoRA adapter directory: lm-eval loads its base and applies it (its peft argument).
    is_model = layout.is_export(export_dir)
    model = (
        {"pretrained": export_dir}
        if is_model
        else {
            "pretrained": adapter_base(export_dir),
            "peft": export_dir,
        }
    )
    args = {
        **model,
        "device": device,
        "dtype": "auto" if device != "cpu" else "float32",
        "max_length": context_length,
    }
    scoring, generating = split_by_output_type(list(spec.tasks), spec)
    flat: dict = {}
    if scoring:
        flat.update(flatten(_evaluate("hf", args, scoring, spec)))
    if generating:
        # The tokenizer object is built into the model (not a loggable model argument).
        built = {"tokenizer": tokenizer} if tokenizer is not None else None
        chat = tokenizer is not None
        flat.update(
            flatten(_evaluate("hf", args, generating, spec, built, apply_chat_template=chat))
        )
    return flat


def split_by_output_type(tasks: list[str], spec: LmEvalConfig) -> tuple[list[str], list[str]]:
    """(log-likelihood tasks, generation tasks): the two go to different endpoints."""
    from lm_eval.tasks import get_task_dict

    scoring, generating = [], []
    for name, task in get_task_dict(tasks, task_manager(spec)).items():
        (generating if task.OUTPUT_TYPE == "generate_until" else scoring).append(name)
    return scoring, generating


def on_endpoint(
    base_url: str, model: str, context_length: int, spec: LmEvalConfig, api_key: str | None
) -> dict:
    """The tasks on a running endpoint (``base_url`` ends in /v1)."""
    scoring, generating = split_by_output_type(list(spec.tasks), spec)
    common = {"model": model, "max_length": context_length, "num_concurrent": 4}
    secret = {}
    if api_key:
        # lm-eval's OpenAI-compatible backends send OPENAI_API_KEY as the bearer token; its
        # remote tokenizer sends auth_token, which must not travel in model_args (lm-eval
        # logs them and records them in its results).
        os.environ["OPENAI_API_KEY"] = api_key
        secret["auth_token"] = api_key
    flat: dict = {}
    if scoring:
        args = {
            **common,
            "base_url": f"{base_url}/completions",
            "tokenizer_backend": "remote",  # the endpoint's own /tokenize, /tokenizer_info
            "tokenized_requests": True,
        }
        flat.update(flatten(_evaluate("local-completions", args, scoring, spec, secret)))
    if generating:
        args = {**common, "base_url": f"{base_url}/chat/completions", "tokenizer_backend": None}
        results = _evaluate(
            "local-chat-completions", args, generating, spec, secret, apply_chat_template=True
        )
        flat.update(flatten(results))
    return flat
