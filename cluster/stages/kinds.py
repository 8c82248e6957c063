"""What each kind of pipeline stage is, as a job: the overrides the pipeline gives it, how
an input becomes an override, its entry point's ``main(overrides)``, where its outputs land,
and its headline figures. The kinds' inputs and outputs are declared in cluster/stages/graph.py.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from cluster.jobs import JOBS
from cluster.schema import load_config
from cluster.stages.graph import TRAINING_KINDS
from rundir import layout
from schemas.fields import ConfigError
from schemas.jobs import PipelineConfig

# The override an input becomes (train's data input is its prepare stage's settings).
INPUT_KEYS = {
    ("finetune", "base"): "model.name_or_path",
    ("dpo", "base"): "model.name_or_path",
    ("eval", "export"): "export",
    ("serve-config", "export"): "checkpoint",
}
REPORT, SERVE_CONFIG = "eval.json", "serve_config.yaml"
# What an output's fingerprint covers, where not all of it: prepared data is what
# preparation wrote (dataprep/cache.py), not the arrow-cache/ its readers add beside it.
CONTENT = {"data": ["dataset", "tokenizer", "stats.json"]}


def config_name(kind: str) -> str:
    return "serve" if kind == "serve-config" else JOBS[kind].config


def fixed_overrides(kind: str, cfg: PipelineConfig, workdir: Path) -> list[str]:
    """What the pipeline sets on every stage of a kind: its folders, and for the training
    stages where they track (the pipeline's store and MLflow experiment)."""
    common = [f"output_dir={cfg.output_dir}", f"cache_dir={cfg.cache_dir}"]
    if kind == "eval":
        return [*common, f"output={workdir / REPORT}"]
    if kind not in TRAINING_KINDS:
        return common
    tracking = [f"tracking.backend={cfg.tracking.backend}"]
    if cfg.tracking.enabled:
        tracking.append(f"tracking.experiment_name={experiment_name(cfg)}")
        if cfg.tracking.uri:
            tracking.append(f"tracking.uri={cfg.tracking.uri}")
    return [*common, *tracking]


def experiment_name(cfg: PipelineConfig) -> str:
    """One MLflow experiment for the pipeline's run and its stages' runs: the UI nests a
    child under its parent only within one experiment."""
    return cfg.tracking.experiment_name or f"pipeline-{cfg.name}"


def input_overrides(kind: str, inputs: dict[str, str]) -> list[str]:
    """Input name -> path (or a placeholder while planning) as the job's overrides."""
    return [
        f"{INPUT_KEYS[kind, key]}={value}"
        for key, value in inputs.items()
        if (kind, key) in INPUT_KEYS
    ]


def run_overrides(
    kind: str, run_name: str, parent_run_id: str | None, lineage: str | None
) -> list[str]:
    """What changes with every invocation (not part of the config hash): the run's name, the
    pipeline's MLflow run, the served export's lineage id."""
    if kind in TRAINING_KINDS:
        parent = [f"tracking.parent_run_id={parent_run_id}"] if parent_run_id else []
        return [f"run_name={run_name}", *parent]
    if kind == "serve-config" and lineage:
        return [f"serve.lineage_id={lineage}"]
    return []


def compose(kind: str, overrides: list[str]):
    """The stage's typed config: bad settings refused here, before anything runs."""
    return load_config(config_name(kind), overrides)


def run(kind: str, overrides: list[str], workdir: Path) -> int:
    """The job's own entry point, in this process: on the cluster this driver is attached to."""
    if kind == "serve-config":
        from cluster.serve import main

        return main(["--write-config", str(workdir / SERVE_CONFIG), *overrides])
    return importlib.import_module(JOBS[kind].module).main(overrides)


def outputs(kind: str, cfg, run_name: str, workdir: Path) -> dict[str, Path]:
    """Where the stage's outputs are, from its typed config (graph.OUTPUTS)."""
    if kind == "prepare":
        return {"data": prepared_data_dir(cfg)}
    if kind in TRAINING_KINDS:
        return {"export": run_dir(cfg, run_name) / layout.EXPORT}
    if kind == "eval":
        return {"report": workdir / REPORT}
    return {"serve_config": workdir / SERVE_CONFIG}


def run_dir(cfg, run_name: str) -> Path:
    return Path(cfg.output_dir) / cfg.experiment / run_name


def prepared_data_dir(cfg) -> Path:
    """The prepare stage's cache directory: found again by its key (a cache hit, no Ray)."""
    from cluster.runs.resolve import absolute_paths
    from dataprep.prepare import prepare_data

    cfg = absolute_paths(cfg)
    found = prepare_data(
        cfg.data, cfg.tokenizer, cfg.trainer.seq_len, cfg.prepared_dir, cfg.model.name_or_path
    )
    if not found.cache_hit:  # the stage has just prepared it: the key must find it
        raise RuntimeError(f"the prepare stage's data is not in {cfg.prepared_dir}")
    return Path(found.root)


def check_trained_on(cfg, run_name: str, data_dir: str) -> None:
    """A train stage whose input is a prepare stage's data trained on exactly that data."""
    summary = json.loads((run_dir(cfg, run_name) / layout.SUMMARY).read_text())
    used = Path(summary["data"]["data_report"]).parent
    if used != Path(data_dir):
        raise ConfigError(
            f"{cfg.experiment} run {run_name} trained on {used}, not on its input {data_dir}; "
            "allowed: no data, tokenizer or seq_len overrides on a train stage whose data is "
            "a prepare stage's (set them on the prepare stage)"
        )


def headline(kind: str, cfg, run_name: str, found: dict[str, Path]) -> dict:
    """The few figures the end-of-pipeline summary shows for the stage, the chain's first."""
    if kind == "prepare":
        stats = json.loads((found["data"] / "stats.json").read_text())
        return {"train_tokens": stats["tokens"]["train"], "vocab_size": stats["vocab_size"]}
    if kind in TRAINING_KINDS:
        summary = json.loads((run_dir(cfg, run_name) / layout.SUMMARY).read_text())
        keys = ("final_val_reward_accuracy", "final_val_loss", "steps")  # the headline first
        return {k: summary[k] for k in keys if summary.get(k) is not None}
    if kind == "eval":
        report = json.loads(found["report"].read_text())
        figures = {
            "perplexity": report.get("text", {}).get("perplexity"),
            "qa_f1": report.get("qa", {}).get("f1"),
        }
        return {k: v for k, v in figures.items() if v is not None}
    return {}
