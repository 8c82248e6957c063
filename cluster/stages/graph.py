"""A pipeline's stages as a graph: what each kind of stage takes and makes, its inputs'
references (STAGE.OUTPUT) checked against them, and the order the stages run in. Any
reference to an output no stage makes, an input a job does not take, or a cycle is refused
in one line before anything runs."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from schemas.fields import ConfigError, require
from schemas.jobs import StageConfig

# Stage kind -> the outputs it makes. Every kind but serve-config is a job of cluster/jobs.py;
# serve-config writes the Serve config of `make serve-config` (no cluster resources).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),  # the prepared data's cache directory (shards, tokenizer, stats)
    "train": ("export",),  # the run's Hugging Face export
    "finetune": ("export",),
    "dpo": ("export",),
    "eval": ("report",),  # eval.json
    "serve-config": ("serve_config",),  # serve_config.yaml
}
# Stage kind -> {input name: the kind of output it takes}.
INPUTS: dict[str, dict[str, str]] = {
    "prepare": {},
    "train": {"data": "data"},  # the stage trains on that stage's data (and its settings)
    "finetune": {"base": "export"},  # model.name_or_path
    "dpo": {"base": "export"},
    "eval": {"export": "export"},  # export
    "serve-config": {"export": "export"},  # checkpoint
}
TRAINING_KINDS = ("train", "finetune", "dpo")


def needs(stages: dict[str, StageConfig], name: str) -> dict[str, tuple[str, str]]:
    """A stage's inputs: input name -> (stage, output)."""
    return {key: parse_ref(name, key, ref) for key, ref in stages[name].inputs.items()}


def parse_ref(stage: str, key: str, ref: str) -> tuple[str, str]:
    source, dot, output = ref.partition(".")
    require(
        bool(source and dot and output),
        f"stages.{stage}.inputs.{key}",
        "a reference STAGE.OUTPUT (e.g. pretrain.export), not a path",
        ref,
    )
    return source, output


def check_inputs(stages: dict[str, StageConfig]) -> dict[str, set[str]]:
    """Each stage's input names and references checked against the kinds; the stages each
    one needs."""
    needs: dict[str, set[str]] = {}
    for name, stage in stages.items():
        needs[name] = set()
        takes = INPUTS[stage.job]
        for key, ref in stage.inputs.items():
            where = f"stages.{name}.inputs.{key}"
            allowed = ", ".join(takes) or "none"
            require(key in takes, where, f"{stage.job} takes the inputs: {allowed}", ref)
            source, output = parse_ref(name, key, ref)
            makes = {
                f"{other}.{out}"
                for other, s in stages.items()
                if other != name
                for out in OUTPUTS[s.job]
                if out == takes[key]
            }
            require(
                source in stages and output in OUTPUTS[stages[source].job] and source != name,
                where,
                "an output another stage makes: " + (", ".join(sorted(makes)) or "none"),
                ref,
            )
            require(
                output == takes[key], where, f"a stage's {takes[key]} output ({stage.job})", ref
            )
            needs[name].add(source)
    return needs


def stage_order(stages: dict[str, StageConfig]) -> list[str]:
    """The stages in the order their inputs need (graphlib), ties in the order listed;
    a cycle is refused in one line naming it."""
    listed = list(stages)
    sorter = TopologicalSorter(check_inputs(stages))
    try:
        sorter.prepare()
    except CycleError as e:
        cycle = " -> ".join(reversed(e.args[1]))
        raise ConfigError(
            f"stages: the inputs form a cycle ({cycle}); allowed: each stage's inputs made by "
            "stages that do not need it"
        ) from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=listed.index)
        order += ready
        sorter.done(*ready)
    return order
