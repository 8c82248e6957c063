"""The end-of-run summary: where every artifact went, final quality, speed, samples."""

from __future__ import annotations

import json
from pathlib import Path

from rundir import layout
from rundir.metrics_file import read_metrics, worker_segments

SAMPLE_PROMPTS = ["The", "Return a", "This module"]


def generate_samples(export_dir: str, n: int, max_new_tokens: int = 32, seed: int = 0) -> list:
    """Sample from the export with plain transformers, as any user of the checkpoint would."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    model = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    torch.manual_seed(seed)
    samples = []
    for prompt in (SAMPLE_PROMPTS * n)[:n]:
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=True, top_p=0.9, temperature=0.8
            )
        samples.append(tokenizer.decode(out[0], skip_special_tokens=True))
    return samples


def build_summary(
    run_dir: Path,
    prepared_stats: dict,
    cache_hit: bool,
    wall_s: float,
    num_samples: int,
    max_steps: int,
) -> dict:
    rows = read_metrics(run_dir / layout.METRICS)
    evals = [r for r in rows if "val_loss" in r]
    speed = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    mfus = [r["mfu"] for r in rows if "mfu" in r]
    export = run_dir / layout.EXPORT
    return {
        "run_dir": str(run_dir),
        "export_dir": str(export),
        "loss_png": str(run_dir / layout.LOSS_PICTURE),
        "metrics_jsonl": str(run_dir / layout.METRICS),
        "tensorboard_dir": str(run_dir / layout.TENSORBOARD),
        "steps": rows[-1]["step"] if rows else 0,
        "workers": worker_segments(rows),  # more than one entry: an elastic run resized
        "initial_val_loss": evals[0]["val_loss"] if evals else None,
        "initial_val_ppl": evals[0].get("val_ppl") if evals else None,
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "final_val_ppl": evals[-1].get("val_ppl") if evals else None,
        # Preference tuning: the held-out pairs' reward accuracy and margin, first and last.
        **{
            f"{when}_val_{key}": row[f"val_{key}"]
            for when, row in (
                ("initial", evals[0] if evals else {}),
                ("final", evals[-1] if evals else {}),
            )
            for key in ("reward_accuracy", "reward_margin")
            if f"val_{key}" in row
        },
        # The first window includes warm-up (allocations, first collectives): median is fairer.
        "tokens_per_s": sorted(speed)[len(speed) // 2] if speed else None,
        "mfu": sorted(mfus)[len(mfus) // 2] if mfus else None,
        "data": {"cache_hit": cache_hit, **prepared_stats},
        "wall_s": round(wall_s, 1),
        "exported": layout.is_export(export),
        "max_steps": max_steps,
        "samples": generate_samples(str(export), num_samples)
        if num_samples and layout.is_export(export)
        else [],
    }


def worker_startup(run_dir: Path, resumed_at: int = 0) -> dict:
    """The worker-side start-up timeline (wall-clock times) of this invocation's first
    worker group: the first metrics row after the resume point that carries one (a group
    restarted later, after a failure or a resize, carries its own)."""
    path = run_dir / layout.METRICS
    rows = read_metrics(path) if path.exists() else []
    return next((r["startup"] for r in rows if "startup" in r and r["step"] > resumed_at), {})


def startup_breakdown(driver: dict, run_dir: Path, resumed_at: int = 0) -> dict:
    """Seconds from the entry point to the first training step, by phase."""
    worker = worker_startup(run_dir, resumed_at)
    if "first_step" not in worker:
        return {}
    return {
        "ray_init": round(driver["ray_ready"] - driver["start"], 2),
        "data": round(driver["data_ready"] - driver["ray_ready"], 2),
        "workers_start": round(worker["worker_start"] - driver["data_ready"], 2),
        "engine_build": round(worker["engine_ready"] - worker["worker_start"], 2),
        "to_first_step": round(worker["first_step"] - worker["engine_ready"], 2),
        "total": round(worker["first_step"] - driver["start"], 2),
    }


def write_and_print(summary: dict, run_dir: Path) -> None:
    (run_dir / layout.SUMMARY).write_text(json.dumps(summary, indent=2))
    f = lambda v, spec: format(v, spec) if v is not None else "n/a"  # noqa: E731
    print("\n=== zeroray run summary ===")
    print(f"run directory : {summary['run_dir']}")
    if summary["exported"]:
        print(f"HF export     : {summary['export_dir']}")
        if summary["steps"] < summary["max_steps"]:
            print(
                f"finished      : at step {summary['steps']} of {summary['max_steps']}, "
                "as `make finish` asked"
            )
    else:
        print(
            f"HF export     : none yet: stopped at step {summary['steps']} before "
            "trainer.max_steps; continue with resume=latest"
        )
    print(f"loss picture  : {summary['loss_png']}")
    print(f"metrics       : {summary['metrics_jsonl']} (TensorBoard: {summary['tensorboard_dir']})")
    print(f"summary       : {run_dir / 'summary.json'}")
    if summary.get("data", {}).get("data_report"):
        print(f"data report   : {summary['data']['data_report']} (and .png)")
    if summary.get("eval_json"):
        print(f"evaluation    : {summary['eval_json']}")
    if summary.get("serve_adapter"):
        print(f"serve adapter : {summary['serve_adapter']}")
    if summary.get("tracking"):
        tracked = summary["tracking"]
        print(f"tracking      : MLflow run {tracked['run_id']} in {tracked['uri']} (make ui)")
    print(
        f"validation    : loss {f(summary['initial_val_loss'], '.3f')} -> "
        f"{f(summary['final_val_loss'], '.3f')}, perplexity "
        f"{f(summary['initial_val_ppl'], ',.1f')} -> {f(summary['final_val_ppl'], ',.1f')}"
    )
    if "final_val_reward_accuracy" in summary:
        print(
            f"held-out pairs: reward accuracy {f(summary['initial_val_reward_accuracy'], '.3f')}"
            f" -> {f(summary['final_val_reward_accuracy'], '.3f')}, margin "
            f"{f(summary['initial_val_reward_margin'], '.3f')} -> "
            f"{f(summary['final_val_reward_margin'], '.3f')}"
        )
    print(
        f"throughput    : {f(summary['tokens_per_s'], ',.0f')} tokens/s (median), MFU "
        f"{f(summary['mfu'], '.1%')}; {summary['steps']} steps in {summary['wall_s']} s"
    )
    if len(summary.get("workers") or []) > 1:
        parts = [
            f"{s['workers']} (steps {s['first_step']}-{s['last_step']})" for s in summary["workers"]
        ]
        print(f"workers       : {', '.join(parts)}")
    if summary.get("startup_s"):
        parts = ", ".join(f"{k} {v}s" for k, v in summary["startup_s"].items() if k != "total")
        print(f"start-up      : {summary['startup_s']['total']} s to the first step ({parts})")
    for i, text in enumerate(summary["samples"], 1):
        print(f"sample {i}      : {text!r}")
