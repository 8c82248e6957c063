"""The one function that writes DeepSpeed's config."""

from __future__ import annotations

from schemas.training import DeepSpeedConfig, OptimConfig, TrainerConfig


def build_ds_config(
    zero: DeepSpeedConfig,
    trainer_cfg: TrainerConfig,
    optim: OptimConfig,
    world_size: int,
    precision: str,
    on_gpu: bool,
) -> dict:
    """DeepSpeed config dict. ``precision`` is already resolved (bf16, fp16 or fp32);
    ``trainer_cfg.grad_accum_steps`` is the group's own (schemas/batch.py: ``accum_for``)."""
    # DeepSpeed's identity; the run's global batch itself is schemas/batch.py's.
    train_batch = trainer_cfg.micro_batch_size * trainer_cfg.grad_accum_steps * world_size
    # FusedAdam is CUDA code that DeepSpeed JIT-builds (nvcc) unless its wheel ships it.
    fused = on_gpu if optim.fused is None else optim.fused
    zero_section: dict = {
        "stage": zero.stage,
        "overlap_comm": zero.overlap_comm and on_gpu,  # overlap needs CUDA streams
        "contiguous_gradients": zero.contiguous_gradients,
        "reduce_bucket_size": zero.reduce_bucket_size,
    }
    if zero.stage == 3:
        # Without this a ZeRO-3 save writes empty placeholders instead of weights.
        zero_section["stage3_gather_16bit_weights_on_model_save"] = True
    if zero.offload_optimizer:
        zero_section["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if zero.offload_param:
        zero_section["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    warmup = max(1, min(optim.warmup_steps, trainer_cfg.max_steps))  # DeepSpeed requires >= 1
    return {
        "train_batch_size": train_batch,
        "train_micro_batch_size_per_gpu": trainer_cfg.micro_batch_size,
        "gradient_accumulation_steps": trainer_cfg.grad_accum_steps,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": zero_section,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": optim.lr,
                "betas": [optim.beta1, optim.beta2],
                "eps": optim.eps,
                "weight_decay": optim.weight_decay,
                # FusedAdam is CUDA-only; with offload DeepSpeed picks its CPU Adam instead.
                "torch_adam": not fused and not zero.offload_optimizer,
            },
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": trainer_cfg.max_steps,
                "warmup_num_steps": warmup,
                "warmup_type": "linear",
                "warmup_min_ratio": 0.0,
                "cos_min_ratio": optim.min_lr_ratio,
            },
        },
        "steps_per_print": 10**9,  # we log ourselves; DeepSpeed's prints would interleave
        "wall_clock_breakdown": False,
    }
