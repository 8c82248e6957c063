"""Config sections of a training run: what Ray Train workers receive (trainer/ reads them).

Each section checks itself in ``__post_init__``, so a bad value fails in the driver, before
any cluster resource is taken, with a message that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.fields import ConfigError, at_least, one_of, positive, require, setting
from schemas.precision import PRECISIONS

MODEL_TYPES = ("gpt2", "llama")


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
            # Against max_steps once it is known: fine-tuning derives it from epochs and the
            # prepared rows (schemas/jobs.py checks early where it can, the resolve always).
            positive("trainer.stop_at_step", self.stop_at_step)
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
