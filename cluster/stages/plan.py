"""The pipeline planned before anything runs: stages in order, each one's overrides and its
config composed and checked (an unknown setting is one line naming the stage), and its
config hash, the part of the skip decision that needs no earlier stage to have run.

The hash is over the stage's whole typed config with its inputs as placeholders (their
content is compared apart, by id) and without what changes with every invocation (the run's
name, the pipeline's MLflow run): a changed default in conf/ reruns the stage as a changed
override does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cluster.stages import graph, kinds
from rundir.stage_manifest import digest, pipeline_dir
from schemas.fields import ConfigError
from schemas.jobs import PipelineConfig


@dataclass(frozen=True)
class PlannedStage:
    name: str
    kind: str
    needs: dict[str, tuple[str, str]]  # input name -> (stage, output)
    overrides: tuple[str, ...]  # fixed, inherited and the stage's own; inputs come last
    config_hash: str
    workdir: Path  # files the stage writes itself (eval.json, serve_config.yaml)
    config: object  # the typed job config composed with placeholder inputs


def placeholder(stage: str, output: str) -> str:
    """What an input is while planning (a path-like token, so path checks still apply)."""
    return f"pipeline-input/{stage}.{output}"


def absolute(cfg: PipelineConfig) -> PipelineConfig:
    """Folders made absolute once: every stage and every Ray worker sees the same ones."""
    return dataclasses.replace(
        cfg,
        output_dir=str(Path(cfg.output_dir).expanduser().resolve()),
        cache_dir=str(Path(cfg.cache_dir).expanduser().resolve()),
    )


def own_overrides(cfg: PipelineConfig, name: str) -> list[str]:
    """A stage's overrides; a train stage whose data is a prepare stage's takes that stage's
    first, so that it trains on the same data and tokenizer."""
    stage = cfg.stages[name]
    inherited = []
    for source, _ in graph.needs(cfg.stages, name).values():
        if stage.job == "train" and cfg.stages[source].job == "prepare":
            inherited += cfg.stages[source].overrides
    return [*inherited, *stage.overrides]


def plan(cfg: PipelineConfig) -> list[PlannedStage]:
    if not cfg.stages:
        raise ConfigError("stages={} is not allowed: at least one stage (conf/pipeline.yaml)")
    planned = []
    for name in graph.stage_order(cfg.stages):  # references and cycles refused here
        kind, needs = cfg.stages[name].job, graph.needs(cfg.stages, name)
        workdir = pipeline_dir(cfg.output_dir, cfg.name) / name
        overrides = [*kinds.fixed_overrides(kind, cfg, workdir), *own_overrides(cfg, name)]
        holders = {key: placeholder(*ref) for key, ref in needs.items()}
        try:
            config = kinds.compose(kind, [*overrides, *kinds.input_overrides(kind, holders)])
        except ConfigError as e:
            raise ConfigError(f"stages.{name} ({kind}): {e}") from None
        config_hash = digest({"job": kind, "config": dataclasses.asdict(config)})
        planned.append(
            PlannedStage(name, kind, needs, tuple(overrides), config_hash, workdir, config)
        )
    return planned
