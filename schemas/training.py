"""Config sections of a training run: what Ray Train workers receive (trainer/ reads them).

Each section checks itself in ``__post_init__``, so a bad value fails in the driver, before
any cluster resource is taken, with a message that names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from schemas.fields import ConfigError, at_least, one_of, positive, require, setting
from schemas.precision import PRECISIONS

MODEL_TYPES = ("gpt2", "llama")
# Per GPU type: memory (GiB), dense bf16 peak (FLOP/s), intra-node bandwidth per GPU (GB/s,
# NVLink; PCIe for the cards without it). Spec-sheet figures.
GPU_SPECS = {
    "H100": (80, 989e12, 450),
    "H200": (141, 989e12, 450),
    "A100-80GB": (80, 312e12, 300),
    "A100-40GB": (40, 312e12, 300),
    "L40S": (48, 362e12, 32),
    "L4": (24, 121e12, 32),
}
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class ModelConfig:
    model_type: str = setting(
        "gpt2",
        "gpt2 | llama: the transformers architecture built from config (ignored with "
        "from_pretrained: the checkpoint's own config.json decides)",
    )
    from_pretrained: bool = setting(
        False, "true: load name_or_path with from_pretrained; false: build from the fields below"
    )
    name_or_path: str | None = setting(
        None, "with from_pretrained: a local Hugging Face directory (an export) or a hub id"
    )
    hidden_size: int = setting(128, "width of the residual stream")
    num_layers: int = setting(2, "transformer blocks")
    num_heads: int = setting(4, "attention heads (hidden_size must divide by it)")
    num_kv_heads: int | None = setting(None, "llama only: grouped-query KV heads; null = num_heads")
    intermediate_size: int | None = setting(None, "MLP width; null = 4 x hidden_size")
    max_position_embeddings: int = setting(256, "longest sequence the model can see")
    dropout: float = setting(0.0, "residual, embedding and attention dropout")
    tie_word_embeddings: bool = setting(
        True, "share the input embedding with the output projection"
    )
    attn_implementation: str = setting(
        "sdpa", "sdpa (PyTorch scaled_dot_product_attention) | eager"
    )

    def __post_init__(self) -> None:
        one_of("model.model_type", self.model_type, MODEL_TYPES)
        if self.from_pretrained:
            require(
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
            positive(f"model.{key}", getattr(self, key))
        require(
            self.hidden_size % self.num_heads == 0,
            "model.hidden_size",
            f"must be divisible by model.num_heads={self.num_heads}",
            self.hidden_size,
        )
        require(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)", self.dropout)
        one_of("model.attn_implementation", self.attn_implementation, ("sdpa", "eager"))


@dataclass
class DeepSpeedConfig:
    stage: int = setting(
        2,
        "ZeRO stage: 0 (plain data parallel) | 1 (optimizer state sharded) | 2 (+ gradients) "
        "| 3 (+ parameters)",
    )
    offload_optimizer: bool = setting(
        False, "optimizer state and step on the CPU (DeepSpeedCPUAdam, JIT-built on first use)"
    )
    offload_param: bool = setting(False, "stage 3 only: parameters on the CPU between uses")
    overlap_comm: bool = setting(True, "overlap gradient reduction with backward (GPUs only)")
    contiguous_gradients: bool = setting(
        True, "copy gradients into one buffer as they are produced (less fragmentation)"
    )
    reduce_bucket_size: int = setting(50_000_000, "elements per gradient reduction bucket")

    def __post_init__(self) -> None:
        one_of("deepspeed.stage", self.stage, (0, 1, 2, 3))
        require(
            not self.offload_param or self.stage == 3,
            "deepspeed.offload_param",
            "true only with deepspeed.stage=3",
            self.offload_param,
        )
        require(
            not self.offload_optimizer or self.stage >= 1,
            "deepspeed.offload_optimizer",
            "true only with deepspeed.stage >= 1",
            self.offload_optimizer,
        )
        positive("deepspeed.reduce_bucket_size", self.reduce_bucket_size)


@dataclass
class ScalingConfig:
    num_workers: Any = setting(
        2,
        "Ray Train workers = DeepSpeed ranks: a count, or [min, max] for elastic training "
        "(starts with as many as fit, at least min, and restarts the group on the newest "
        "checkpoint, resharded, whenever nodes leave or more fit); null = num_nodes x "
        "gpus_per_node",
    )
    worker_start_timeout_s: float = setting(
        60.0,
        "how long a worker group may take to start before Ray Train tries again; after a node "
        "loss an elastic run's first try may still count the lost node (Ray's view of the "
        "cluster refreshes every 20 s), so a shorter timeout recovers sooner",
    )
    elastic_resize_monitor_interval_s: float = setting(
        60.0,
        "elastic runs: how often, while the group is healthy, Ray Train checks whether more "
        "workers fit (growing restarts the group from the newest checkpoint)",
    )
    use_gpu: bool = setting(False, "one GPU per worker (NCCL); false = CPUs (gloo)")
    cpus_per_worker: int = setting(1, "CPU cores reserved per worker (also its torch threads)")
    num_nodes: int = setting(1, "nodes the workers spread over")
    gpus_per_node: int = setting(0, "GPUs per node (use_gpu only)")
    gpu_type: str | None = setting(
        None,
        "H100 | H200 | A100-80GB | A100-40GB | L40S | L4: the defaults of device memory, "
        "peak FLOP/s and interconnect for the plan; null = set them yourself (or CPU workers)",
    )
    device_memory_gib: float | None = setting(
        None,
        "memory of one worker's device for the plan's fit check; null = the GPU type's, or on "
        "CPU workers this machine's memory shared by the workers of a node",
    )
    placement_strategy: str = setting(
        "PACK",
        "how Ray places the workers: PACK (as few nodes as possible) | SPREAD | STRICT_PACK "
        "| STRICT_SPREAD",
    )
    peak_flops_per_device: float | None = setting(
        None,
        "dense peak FLOP/s of one worker's device, for MFU; null = the GPU type's bf16 peak, "
        "or else a matmul measured at start",
    )

    def __post_init__(self) -> None:
        positive("scaling.num_nodes", self.num_nodes)
        positive("scaling.cpus_per_worker", self.cpus_per_worker)
        one_of("scaling.placement_strategy", self.placement_strategy, PLACEMENT_STRATEGIES)
        if self.peak_flops_per_device is not None:
            positive("scaling.peak_flops_per_device", self.peak_flops_per_device)
        if self.gpu_type is not None:
            one_of("scaling.gpu_type", self.gpu_type, tuple(GPU_SPECS))
            if self.peak_flops_per_device is None:
                self.peak_flops_per_device = GPU_SPECS[self.gpu_type][1]
        if self.device_memory_gib is not None:
            positive("scaling.device_memory_gib", self.device_memory_gib)
        if self.use_gpu:
            positive("scaling.gpus_per_node", self.gpus_per_node)
        if self.num_workers is None:
            require(
                self.use_gpu, "scaling.num_workers", "required when scaling.use_gpu=false", None
            )
            self.num_workers = self.num_nodes * self.gpus_per_node
        self.num_workers = _worker_count(self.num_workers)
        positive("scaling.worker_start_timeout_s", self.worker_start_timeout_s)
        at_least(
            "scaling.elastic_resize_monitor_interval_s", self.elastic_resize_monitor_interval_s, 0
        )

    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, list)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if self.elastic else self.num_workers

    @property
    def max_workers(self) -> int:
        """The group's full size: what the global batch and the plan are set for."""
        return self.num_workers[1] if self.elastic else self.num_workers

    def worker_counts(self) -> range:
        return range(self.min_workers, self.max_workers + 1)


def _worker_count(value: Any) -> int | list[int]:
    """A positive count, or [min, max] with 1 <= min < max ([n, n] is the count n)."""
    allowed = "a count > 0, or [min, max] with 1 <= min <= max"
    if isinstance(value, (list, tuple)):
        counts = list(value)
        ok = len(counts) == 2 and all(type(c) is int for c in counts)
        require(ok and 1 <= counts[0] <= counts[1], "scaling.num_workers", allowed, counts)
        return counts[0] if counts[0] == counts[1] else counts
    require(type(value) is int and value > 0, "scaling.num_workers", allowed, value)
    return value


@dataclass
class OptimConfig:
    lr: float = setting(2e-3, "peak learning rate, reached after warmup_steps")
    weight_decay: float = setting(
        0.1, "decoupled (AdamW) weight decay on matrices; none on biases and norm weights"
    )
    beta1: float = setting(0.9, "Adam's first-moment decay")
    beta2: float = setting(0.95, "Adam's second-moment decay")
    eps: float = setting(1e-8, "Adam's denominator epsilon")
    warmup_steps: int = setting(10, "linear warmup from 0 to lr over these optimizer steps")
    min_lr_ratio: float = setting(
        0.1, "cosine decay floor as a fraction of lr, reached at trainer.max_steps"
    )
    grad_clip: float = setting(1.0, "max global gradient norm; 0 = no clipping")
    fused: bool | None = setting(
        None,
        "DeepSpeed's FusedAdam (CUDA, JIT-built unless prebuilt); null = fused on GPUs and "
        "torch's AdamW on CPUs; false = torch's everywhere",
    )

    def __post_init__(self) -> None:
        positive("optim.lr", self.lr)
        at_least("optim.weight_decay", self.weight_decay, 0)
        require(0 <= self.beta1 < 1, "optim.beta1", "must be in [0, 1)", self.beta1)
        require(0 <= self.beta2 < 1, "optim.beta2", "must be in [0, 1)", self.beta2)
        at_least("optim.warmup_steps", self.warmup_steps, 0)
        require(
            0 <= self.min_lr_ratio <= 1,
            "optim.min_lr_ratio",
            "must be in [0, 1]",
            self.min_lr_ratio,
        )
        at_least("optim.grad_clip", self.grad_clip, 0)


@dataclass
class TrainerConfig:
    max_steps: int = setting(500, "optimizer steps; the LR schedule is planned over these")
    stop_at_step: int | None = setting(
        None, "end this invocation after this step; resume=latest continues the run"
    )
    micro_batch_size: int = setting(8, "sequences per worker per forward pass")
    grad_accum_steps: int = setting(
        1,
        "micro-batches per optimizer step; global batch = micro x accum x workers (elastic: "
        "x the most workers; fewer workers accumulate more steps to keep it)",
    )
    seq_len: int = setting(128, "tokens per packed training sequence (<= the model's context)")
    log_every_steps: int = setting(
        10, "loss, lr, grad norm, tokens/s, MFU -> metrics.jsonl and TensorBoard"
    )
    eval_every_steps: int = setting(
        100, "validation loss and perplexity; also at the end (and at step 0: eval_at_start)"
    )
    eval_at_start: bool = setting(
        True, "validation loss before the first step (the start of the loss curve)"
    )
    eval_batches: int = setting(20, "cap on validation micro-batches per evaluation, per worker")
    checkpoint_every_steps: int = setting(
        250, "resumable checkpoint of all ranks, reported to Ray Train; also at the end"
    )
    keep_checkpoints: int = setting(2, "newest checkpoints Ray Train keeps")
    precision: str = setting(
        "auto", "auto (bf16 on GPUs that support it, else fp32) | bf16 | fp16 | fp32"
    )
    gradient_checkpointing: bool = setting(
        False, "recompute activations in backward: less memory, about 30% slower"
    )
    num_dataloader_workers: int = setting(
        0, "DataLoader worker processes per Ray worker; 0 = load in the training process"
    )

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
            positive(f"trainer.{key}", getattr(self, key))
        one_of("trainer.precision", self.precision, PRECISIONS)
        if self.stop_at_step is not None:
            require(
                0 < self.stop_at_step <= self.max_steps,
                "trainer.stop_at_step",
                f"null or in 1..trainer.max_steps={self.max_steps}",
                self.stop_at_step,
            )
        at_least("trainer.num_dataloader_workers", self.num_dataloader_workers, 0)


@dataclass
class LoraConfig:
    enabled: bool = setting(
        False, "true: train a LoRA adapter (peft) instead of every weight (ZeRO 0-2)"
    )
    rank: int = setting(16, "r: width of the low-rank update")
    alpha: int = setting(32, "the update is scaled by alpha / rank")
    dropout: float = setting(0.05, "dropout on the adapter's input")
    target_modules: list[str] | None = setting(
        None, "e.g. [c_attn, c_proj] or [q_proj, v_proj]; null = peft's default per architecture"
    )
    merge_on_export: bool = setting(
        True, "true: merge into a plain checkpoint; false: export the adapter (peft layout)"
    )

    def __post_init__(self) -> None:
        positive("lora.rank", self.rank)
        positive("lora.alpha", self.alpha)
        require(0.0 <= self.dropout < 1.0, "lora.dropout", "in [0, 1)", self.dropout)


@dataclass
class DPOConfig:
    beta: float = setting(
        0.1,
        "how far the policy may move from the reference: the reward is beta x the log-ratio "
        "of policy to reference on the answer tokens",
    )
    label_smoothing: float = setting(
        0.0, "conservative DPO: the share of pairs assumed mislabelled, in [0, 0.5)"
    )
    disable_dropout: bool = setting(
        True,
        "switch off every dropout layer (the model's and LoRA's), so the policy and its "
        "reference score a pair alike until the weights move",
    )

    def __post_init__(self) -> None:
        positive("dpo.beta", self.beta)
        require(
            0.0 <= self.label_smoothing < 0.5,
            "dpo.label_smoothing",
            "in [0, 0.5)",
            self.label_smoothing,
        )


@dataclass
class RunPaths:
    """Absolute locations a worker needs; resolved in the driver (workers have other cwds)."""

    run_dir: str
    dataset_dir: str  # prepared, packed dataset (datasets.save_to_disk layout)
    tokenizer_dir: str
    export_dir: str
    resume_from: str | None = None  # checkpoint a resume=... starts from (before Ray has one)
    upload_uri: str | None = None  # output_dir is a URI: rank 0 uploads run_dir here at the end


def grad_accum_for(scaling: ScalingConfig, trainer: TrainerConfig, world: int) -> int:
    """Accumulation steps on ``world`` workers that keep the global batch the configuration
    sets for the full group (micro x accum x max workers): an elastic run that shrinks
    accumulates more, so every step sees as many sequences and the LR schedule holds."""
    return trainer.grad_accum_steps * scaling.max_workers // world


def check_elastic_batch(scaling: ScalingConfig, trainer: TrainerConfig) -> None:
    """Every count of [min, max] must split the global batch into whole micro-batches."""
    units = trainer.grad_accum_steps * scaling.max_workers  # micro-batches per step
    bad = [w for w in scaling.worker_counts() if units % w]
    if not bad:
        return
    counts = list(scaling.worker_counts())
    fix = next(
        a for a in range(1, math.lcm(*counts) + 1) if all(a * counts[-1] % w == 0 for w in counts)
    )
    raise ConfigError(
        f"scaling.num_workers={scaling.num_workers}: the global batch of {units} "
        f"micro-batches (trainer.grad_accum_steps {trainer.grad_accum_steps} x "
        f"{scaling.max_workers} workers) cannot be split evenly over {bad[0]} workers; "
        f"allowed: trainer.grad_accum_steps={fix} (or a multiple), or a narrower range"
    )
