"""Typed configuration that crosses from the driver into Ray Train workers.

Plain dataclasses: Hydra (in ``cluster/``) composes YAML against these same classes,
converts once, and ships the resulting objects to workers. Nothing here imports Hydra.
Each section validates itself in ``__post_init__`` so a bad value fails in the driver,
before any cluster resource is taken, with a message that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the field."""


def _require(ok: bool, key: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _one_of(key: str, value: object, choices: tuple) -> None:
    _require(value in choices, key, "one of " + ", ".join(map(str, choices)), value)


def _positive(key: str, value: int | float) -> None:
    _require(value is not None and value > 0, key, "must be > 0", value)


MODEL_TYPES = ("gpt2", "llama")
DATA_SOURCES = ("pydoc", "text-files", "hf-dataset")
TOKENIZER_KINDS = ("train-bpe", "pretrained")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class ModelConfig:
    # Architecture built from config unless name_or_path is set (then from_pretrained).
    model_type: str = "gpt2"
    from_pretrained: bool = False  # true: load name_or_path; false: build from the fields below
    name_or_path: str | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None  # llama grouped-query attention; None = num_heads
    intermediate_size: int | None = None  # None = 4 x hidden_size
    max_position_embeddings: int = 256
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        _one_of("model.model_type", self.model_type, MODEL_TYPES)
        if self.from_pretrained:
            _require(
                bool(self.name_or_path),
                "model.name_or_path",
                "a local Hugging Face directory or hub id when model=pretrained",
                self.name_or_path,
            )
        elif self.name_or_path:
            raise ConfigError(
                "model.name_or_path is set but model.from_pretrained=false; "
                "allowed: use model=pretrained to load weights"
            )
        for key in ("hidden_size", "num_layers", "num_heads", "max_position_embeddings"):
            _positive(f"model.{key}", getattr(self, key))
        _require(
            self.hidden_size % self.num_heads == 0,
            "model.hidden_size",
            f"must be divisible by model.num_heads={self.num_heads}",
            self.hidden_size,
        )
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)", self.dropout)
        _one_of("model.attn_implementation", self.attn_implementation, ("sdpa", "eager"))


@dataclass
class TokenizerConfig:
    kind: str = "train-bpe"
    vocab_size: int = 4096  # train-bpe only: size of the learned vocabulary
    min_frequency: int = 2  # train-bpe only: merges seen fewer times are dropped
    name_or_path: str | None = None  # pretrained only; None = model.name_or_path

    def __post_init__(self) -> None:
        _one_of("tokenizer.kind", self.kind, TOKENIZER_KINDS)
        _require(
            self.vocab_size >= 300,
            "tokenizer.vocab_size",
            "must be >= 300 (256 byte symbols plus merges)",
            self.vocab_size,
        )
        _positive("tokenizer.min_frequency", self.min_frequency)


@dataclass
class DataConfig:
    source: str = "pydoc"
    paths: list[str] = field(default_factory=list)  # text-files: globs of .txt/.jsonl/.parquet
    text_field: str = "text"  # jsonl/parquet/hf-dataset column holding the document
    hf_name: str | None = None  # hf-dataset: hub name or local dataset directory
    hf_config: str | None = None
    hf_split: str = "train"
    validation_fraction: float = 0.05  # share of *sources* (files) held out, not of lines
    min_chars: int = 64  # cleaned documents shorter than this are dropped
    max_documents: int | None = None  # cap for quick experiments; None = all

    def __post_init__(self) -> None:
        _one_of("data.source", self.source, DATA_SOURCES)
        _require(
            0.0 < self.validation_fraction < 0.5,
            "data.validation_fraction",
            "must be in (0, 0.5)",
            self.validation_fraction,
        )
        _require(self.min_chars >= 0, "data.min_chars", "must be >= 0", self.min_chars)
        if self.source == "text-files":
            _require(
                bool(self.paths), "data.paths", "at least one glob for data=text-files", self.paths
            )
        if self.source == "hf-dataset":
            _require(
                bool(self.hf_name),
                "data.hf_name",
                "a dataset name or local path for data=hf-dataset",
                self.hf_name,
            )


@dataclass
class DeepSpeedConfig:
    stage: int = 2  # ZeRO stage 0-3
    offload_optimizer: bool = False  # optimizer state and step on the CPU (DeepSpeedCPUAdam)
    offload_param: bool = False  # ZeRO-3 only: parameters live on the CPU between uses
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 50_000_000

    def __post_init__(self) -> None:
        _one_of("deepspeed.stage", self.stage, (0, 1, 2, 3))
        _require(
            not self.offload_param or self.stage == 3,
            "deepspeed.offload_param",
            "true only with deepspeed.stage=3",
            self.offload_param,
        )
        _require(
            not self.offload_optimizer or self.stage >= 1,
            "deepspeed.offload_optimizer",
            "true only with deepspeed.stage >= 1",
            self.offload_optimizer,
        )
        _positive("deepspeed.reduce_bucket_size", self.reduce_bucket_size)


@dataclass
class ScalingSpec:
    num_workers: int | None = 2  # None = num_nodes x gpus_per_node
    use_gpu: bool = False
    cpus_per_worker: int = 1
    num_nodes: int = 1
    gpus_per_node: int = 0
    placement_strategy: str = "PACK"
    # Dense peak FLOP/s of one worker's device, for MFU; None = measure a matmul at start.
    peak_flops_per_device: float | None = None

    def __post_init__(self) -> None:
        _positive("scaling.num_nodes", self.num_nodes)
        _positive("scaling.cpus_per_worker", self.cpus_per_worker)
        _one_of("scaling.placement_strategy", self.placement_strategy, PLACEMENT_STRATEGIES)
        if self.peak_flops_per_device is not None:
            _positive("scaling.peak_flops_per_device", self.peak_flops_per_device)
        if self.use_gpu:
            _positive("scaling.gpus_per_node", self.gpus_per_node)
        if self.num_workers is None:
            _require(
                self.use_gpu, "scaling.num_workers", "required when scaling.use_gpu=false", None
            )
            self.num_workers = self.num_nodes * self.gpus_per_node
        _positive("scaling.num_workers", self.num_workers)


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.1  # not applied to biases and norm weights
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # cosine decays to lr x min_lr_ratio at max_steps
    grad_clip: float = 1.0  # 0 disables clipping
    fused: bool | None = None  # DeepSpeed FusedAdam; None = on GPUs, torch's AdamW on CPUs

    def __post_init__(self) -> None:
        _positive("optim.lr", self.lr)
        _require(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        _require(0 <= self.beta1 < 1, "optim.beta1", "must be in [0, 1)", self.beta1)
        _require(0 <= self.beta2 < 1, "optim.beta2", "must be in [0, 1)", self.beta2)
        _require(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0", self.warmup_steps)
        _require(
            0 <= self.min_lr_ratio <= 1,
            "optim.min_lr_ratio",
            "must be in [0, 1]",
            self.min_lr_ratio,
        )
        _require(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0", self.grad_clip)


@dataclass
class LoopConfig:
    max_steps: int = 500  # optimizer steps
    stop_at_step: int | None = None  # end this invocation early; resume=latest continues
    micro_batch_size: int = 8  # sequences per worker per forward pass
    grad_accum_steps: int = 1
    seq_len: int = 128  # tokens per packed training sequence
    log_every_steps: int = 10
    eval_every_steps: int = 100  # validation loss and perplexity; also at step 0 and the end
    eval_batches: int = 20  # cap on validation micro-batches per evaluation
    checkpoint_every_steps: int = 250  # resumable checkpoint (all ranks) reported to Ray Train
    keep_checkpoints: int = 2
    precision: str = "auto"  # auto = bf16 on GPUs that support it, else fp32
    gradient_checkpointing: bool = False
    num_dataloader_workers: int = 0  # 0 = load in the training process

    def __post_init__(self) -> None:
        for key in (
            "max_steps",
            "micro_batch_size",
            "grad_accum_steps",
            "seq_len",
            "log_every_steps",
            "eval_every_steps",
            "eval_batches",
            "checkpoint_every_steps",
            "keep_checkpoints",
        ):
            _positive(f"trainer.{key}", getattr(self, key))
        _one_of("trainer.precision", self.precision, PRECISIONS)
        if self.stop_at_step is not None:
            _require(
                0 < self.stop_at_step <= self.max_steps,
                "trainer.stop_at_step",
                f"null or in 1..trainer.max_steps={self.max_steps}",
                self.stop_at_step,
            )
        _require(
            self.num_dataloader_workers >= 0,
            "trainer.num_dataloader_workers",
            "must be >= 0",
            self.num_dataloader_workers,
        )


@dataclass
class TrainConfig:
    experiment: str = "pretrain"  # runs land in <output_dir>/<experiment>/<run_name>/
    run_name: str | None = None  # None = a new timestamp; an existing name is refused
    output_dir: str = "runs"
    cache_dir: str = "cache"  # prepared datasets and tokenizers, keyed by input hash
    seed: int = 1234
    num_samples: int = 3  # text samples generated from the export in the summary
    max_failures: int = 2  # worker-group restarts from the last checkpoint before giving up
    resume: str | None = None  # None | "latest" | a run or checkpoint directory
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        _require(
            bool(self.experiment) and "/" not in self.experiment,
            "experiment",
            "a non-empty name without '/'",
            self.experiment,
        )
        _require(self.num_samples >= 0, "num_samples", "must be >= 0", self.num_samples)
        _require(
            self.max_failures >= -1,
            "max_failures",
            "must be >= 0, or -1 for unlimited",
            self.max_failures,
        )
        if self.tokenizer.kind == "pretrained":
            _require(
                bool(self.tokenizer.name_or_path or self.model.name_or_path),
                "tokenizer.name_or_path",
                "a path or hub id (or set model.name_or_path) for tokenizer=pretrained",
                None,
            )
        if not self.model.from_pretrained:
            _require(
                self.trainer.seq_len <= self.model.max_position_embeddings,
                "trainer.seq_len",
                f"must be <= model.max_position_embeddings={self.model.max_position_embeddings}",
                self.trainer.seq_len,
            )


@dataclass
class RunPaths:
    """Absolute locations a worker needs; resolved in the driver (workers have other cwds)."""

    run_dir: str
    dataset_dir: str  # prepared, packed dataset (datasets.save_to_disk layout)
    tokenizer_dir: str
    export_dir: str
    resume_from: str | None = None  # checkpoint a resume=... starts from (before Ray has one)
