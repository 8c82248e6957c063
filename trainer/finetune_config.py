"""Typed configuration of fine-tuning and evaluation (conf/finetune.yaml, conf/eval.yaml).

Fine-tuning is pretraining's run with three more sections: the instruction data (`sft`),
optional LoRA (`lora`) and the evaluation that ends the run (`eval`). Like config.py,
every section checks itself in ``__post_init__`` and names the field it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.config import DataConfig, TrainConfig, _one_of, _positive, _require

SFT_SOURCES = ("stdlib-qa", "jsonl", "hf-dataset")
TRUNCATIONS = ("left", "right", "drop")


@dataclass
class SFTDataConfig:
    source: str = "stdlib-qa"  # stdlib-qa (embedded) | jsonl | hf-dataset
    paths: list[str] = field(default_factory=list)  # jsonl: training files (globs)
    test_paths: list[str] = field(default_factory=list)  # jsonl: held-out files; [] = split
    hf_name: str | None = None  # hf-dataset: hub name or local dataset directory
    hf_config: str | None = None
    hf_split: str = "train"
    hf_test_split: str | None = None  # None = hold out test_fraction of hf_split
    messages_field: str = "messages"  # a list of {role, content} chat turns, or:
    prompt_field: str = "prompt"  # ... a prompt/response pair
    response_field: str = "response"
    test_fraction: float = 0.1  # held out when no test set is given (by group for stdlib-qa)
    truncation: str = "left"  # over-long examples: left (drop the start) | right | drop
    packing: bool = True  # several short examples per sequence (attention kept apart)
    max_bad_fraction: float = 0.05  # fail when more of the records than this are bad
    max_examples: int | None = None  # cap on training examples (None = all)

    def __post_init__(self) -> None:
        _one_of("sft.source", self.source, SFT_SOURCES)
        _one_of("sft.truncation", self.truncation, TRUNCATIONS)
        _require(
            0.0 < self.test_fraction < 0.5, "sft.test_fraction", "in (0, 0.5)", self.test_fraction
        )
        _require(
            0.0 <= self.max_bad_fraction <= 1.0,
            "sft.max_bad_fraction",
            "in [0, 1]",
            self.max_bad_fraction,
        )
        if self.max_examples is not None:
            _positive("sft.max_examples", self.max_examples)
        if self.source == "jsonl":
            _require(bool(self.paths), "sft.paths", "at least one glob for sft=jsonl", self.paths)
        if self.source == "hf-dataset":
            _require(
                bool(self.hf_name), "sft.hf_name", "a dataset name or local path", self.hf_name
            )


@dataclass
class LoraConfig:
    enabled: bool = False  # false = full fine-tuning of every weight
    rank: int = 16  # r: width of the low-rank update
    alpha: int = 32  # the update is scaled by alpha / rank
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None = peft's default for the architecture
    merge_on_export: bool = True  # false = export the adapter alone (peft layout)

    def __post_init__(self) -> None:
        _positive("lora.rank", self.rank)
        _positive("lora.alpha", self.alpha)
        _require(0.0 <= self.dropout < 1.0, "lora.dropout", "in [0, 1)", self.dropout)


@dataclass
class EvalSpec:
    max_examples: int = 200  # held-out QA / translation examples generated per model
    max_new_tokens: int = 48  # greedy decoding budget per answer
    batch_size: int = 32  # prompts per generate call (left-padded)
    text_batches: int = 20  # batches of held-out text for perplexity
    seq_len: int = 128  # tokens per perplexity sequence
    num_samples: int = 5  # rows of the prompt / reference / output table
    translation_paths: list[str] = field(default_factory=list)  # JSONL with source/target
    source_field: str = "source"
    target_field: str = "target"
    num_cpus: int = 2  # CPUs of the Ray task that evaluates (torch threads)
    use_gpu: bool = False  # evaluate on one GPU of the cluster

    def __post_init__(self) -> None:
        for key in ("max_examples", "max_new_tokens", "batch_size", "text_batches", "seq_len"):
            _positive(f"eval.{key}", getattr(self, key))
        _positive("eval.num_cpus", self.num_cpus)
        _require(self.num_samples >= 0, "eval.num_samples", "must be >= 0", self.num_samples)


@dataclass
class FinetuneConfig(TrainConfig):
    experiment: str = "finetune"
    epochs: float | None = 3.0  # passes over the training examples; sets trainer.max_steps
    sft: SFTDataConfig = field(default_factory=SFTDataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs is not None:
            _positive("epochs", self.epochs)
        if self.lora.enabled:
            _require(
                self.deepspeed.stage < 3,
                "deepspeed.stage",
                "0, 1 or 2 with lora.enabled=true (the adapter is small: shard it with ZeRO-2)",
                self.deepspeed.stage,
            )


@dataclass
class EvalConfig:
    export: str | None = None  # export directory to evaluate; None = the newest under output_dir
    output_dir: str = "runs"
    cache_dir: str = "cache"
    seed: int = 1234
    output: str | None = None  # report path; None = eval.json beside the export
    data: DataConfig = field(default_factory=DataConfig)  # held-out text for perplexity
    sft: SFTDataConfig = field(default_factory=SFTDataConfig)  # its test split: QA
    eval: EvalSpec = field(default_factory=EvalSpec)
