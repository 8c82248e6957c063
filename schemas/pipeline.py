"""The pipeline config (conf/pipeline.yaml): named stages, each an existing job with its own
overrides, whose inputs name earlier stages' outputs by reference (``base: pretrain.export``),
never by path: the path is the one that stage's manifest records, found when the pipeline runs.

What each kind of stage takes and makes is declared here, so that a reference to an output
no stage makes, an input a job does not take, or a cycle is refused in one line before
anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from schemas.fields import ConfigError, one_of, require, setting
from schemas.jobs import is_plain_name
from schemas.tracking import TrackingConfig

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


@dataclass
class StageConfig:
    job: str = setting(
        "???", "the stage's kind: prepare | train | finetune | dpo | eval | serve-config"
    )
    inputs: dict[str, str] = setting(
        factory=dict,
        help="input name -> STAGE.OUTPUT of an earlier stage (train: data; finetune, dpo: "
        "base; eval, serve-config: export), resolved when the pipeline runs to the path that "
        "stage's manifest records",
    )
    overrides: list[str] = setting(
        factory=list, help="the job's own overrides, as on its command line (key=value ...)"
    )


@dataclass
class PipelineConfig:
    name: str = setting(
        "default",
        "the pipeline's name: its manifests go to <output_dir>/pipelines/<name>/, its runs "
        "are named <name>-<stage>-<time>",
    )
    output_dir: str = setting("runs", "every stage's output_dir (a local or shared path)")
    cache_dir: str = setting("cache", "every stage's cache_dir (prepared data, tokenizers)")
    stages: dict[str, StageConfig] = setting(
        factory=dict,
        help="stage name -> its job, inputs and overrides; run in the order their inputs "
        "need, else as listed; a stage whose config and inputs equal its finished manifest's "
        "is skipped",
    )
    tracking: TrackingConfig = setting(
        factory=TrackingConfig,
        help="one parent MLflow run per invocation, each stage's run its child; the "
        "training stages track into the same store (none: no stage tracks)",
    )

    def __post_init__(self) -> None:
        require(is_plain_name(self.name), "name", "a name without '/', '\\' or '..'", self.name)
        require(
            "://" not in self.output_dir,
            "output_dir",
            "a local or shared path (a pipeline at a storage URI is not supported yet)",
            self.output_dir,
        )
        require(bool(self.stages), "stages", "at least one stage", self.stages)
        for name, stage in self.stages.items():
            require(is_plain_name(name), "stages", "names without '/', '\\' or '..'", name)
            one_of(f"stages.{name}.job", stage.job, tuple(OUTPUTS))
        stage_order(self.stages)  # every reference made by an earlier stage, no cycle

    def needs(self, name: str) -> dict[str, tuple[str, str]]:
        """A stage's inputs: input name -> (stage, output)."""
        return {key: parse_ref(name, key, ref) for key, ref in self.stages[name].inputs.items()}


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
