"""DeepSpeed config: batch arithmetic, ZeRO stages, offload, optimizer, scheduler, precision."""

from __future__ import annotations

import pytest
import torch

from cluster.schema import group_options, load_config
from schemas.batch import BatchPlan
from schemas.precision import resolve_precision
from schemas.training import DeepSpeedConfig, OptimConfig, TrainerConfig
from trainer.ds_config import build_ds_config


def build(
    stage=2,
    offload_optimizer=False,
    offload_param=False,
    precision="fp32",
    on_gpu=False,
    world_size=2,
    **loop,
):
    return build_ds_config(
        DeepSpeedConfig(
            stage=stage, offload_optimizer=offload_optimizer, offload_param=offload_param
        ),
        TrainerConfig(**loop),
        OptimConfig(),
        world_size,
        precision,
        on_gpu,
    )


@pytest.mark.parametrize(
    ("micro", "accum", "world"), [(1, 1, 1), (8, 1, 2), (4, 3, 2), (2, 8, 8), (3, 5, 16)]
)
def test_batch_arithmetic(micro, accum, world):
    ds = build(world_size=world, micro_batch_size=micro, grad_accum_steps=accum)
    assert ds["train_batch_size"] == micro * accum * world
    assert ds["train_micro_batch_size_per_gpu"] == micro
    assert ds["gradient_accumulation_steps"] == accum
    # The run's global batch (schemas/batch.py) is what DeepSpeed is told, for a fixed group.
    plan = BatchPlan(micro, accum, min_workers=world, max_workers=world)
    assert plan.global_batch == ds["train_batch_size"] and plan.accum_for(world) == accum


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_each_zero_stage(stage):
    zero = build(stage=stage)["zero_optimization"]
    assert zero["stage"] == stage
    # Without this, a ZeRO-3 save writes empty placeholders instead of weights.
    assert zero.get("stage3_gather_16bit_weights_on_model_save", False) is (stage == 3)
    assert "offload_optimizer" not in zero and "offload_param" not in zero


def test_offload_sections():
    zero = build(stage=3, offload_optimizer=True, offload_param=True)["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": False}
    gpu = build(stage=3, offload_optimizer=True, offload_param=True, on_gpu=True)
    assert gpu["zero_optimization"]["offload_optimizer"]["pin_memory"] is True
    assert gpu["zero_optimization"]["offload_param"]["pin_memory"] is True
    only_opt = build(stage=2, offload_optimizer=True)["zero_optimization"]
    assert only_opt["offload_optimizer"]["device"] == "cpu"
    assert "offload_param" not in only_opt


def test_torch_adam_on_cpu_only():
    def torch_adam(**kw):
        return build(**kw)["optimizer"]["params"]["torch_adam"]

    assert torch_adam(on_gpu=False) is True  # FusedAdam is CUDA-only
    assert torch_adam(on_gpu=True) is False
    assert torch_adam(on_gpu=False, offload_optimizer=True) is False  # DeepSpeedCPUAdam


def test_overlap_comm_only_on_gpu():
    assert build(on_gpu=False)["zero_optimization"]["overlap_comm"] is False
    assert build(on_gpu=True)["zero_optimization"]["overlap_comm"] is True


def test_optimizer_params_follow_optim_config():
    optim = OptimConfig(lr=3e-4, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05, grad_clip=0.5)
    ds = build_ds_config(DeepSpeedConfig(), TrainerConfig(), optim, 1, "fp32", False)
    params = ds["optimizer"]["params"]
    assert params["lr"] == 3e-4
    assert params["betas"] == [0.8, 0.99]
    assert params["eps"] == 1e-6
    assert params["weight_decay"] == 0.05
    assert ds["gradient_clipping"] == 0.5


@pytest.mark.parametrize(
    ("max_steps", "warmup", "expected_warmup"),
    [(150, 10, 10), (100, 0, 1), (20, 500, 20), (1, 1, 1)],
)
def test_scheduler_steps(max_steps, warmup, expected_warmup):
    ds = build_ds_config(
        DeepSpeedConfig(),
        TrainerConfig(max_steps=max_steps),
        OptimConfig(warmup_steps=warmup, min_lr_ratio=0.25),
        2,
        "fp32",
        False,
    )
    params = ds["scheduler"]["params"]
    assert params["total_num_steps"] == max_steps
    assert params["warmup_num_steps"] == expected_warmup
    assert 1 <= params["warmup_num_steps"] <= max_steps
    assert params["cos_min_ratio"] == 0.25


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_precision_sections(precision):
    ds = build(precision=precision)
    assert ds["bf16"]["enabled"] is (precision == "bf16")
    assert ds["fp16"]["enabled"] is (precision == "fp16")


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_resolve_precision_passes_explicit_values(precision):
    assert resolve_precision(precision) == precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means bf16 on capable GPUs")
def test_auto_precision_is_fp32_on_cpu():
    assert resolve_precision("auto") == "fp32"
    assert build(precision=resolve_precision("auto"))["bf16"]["enabled"] is False


@pytest.mark.parametrize("option", group_options("deepspeed"))
def test_deepspeed_accepts_every_option(option):
    """DeepSpeed's own parser (pydantic, extra keys forbidden) accepts what we write for
    every conf/deepspeed option; world size 1 since no process group exists here."""
    from deepspeed.runtime.config import DeepSpeedConfig as DeepSpeedParsed

    cfg = load_config(
        "train", [f"deepspeed={option}", "trainer.micro_batch_size=4", "trainer.grad_accum_steps=3"]
    )
    ds = build_ds_config(cfg.deepspeed, cfg.trainer, cfg.optim, 1, "bf16", False)
    parsed = DeepSpeedParsed(ds)
    assert parsed.train_batch_size == 12
    assert parsed.gradient_accumulation_steps == 3
    assert parsed.zero_optimization_stage == cfg.deepspeed.stage
    assert parsed.zero_config.gather_16bit_weights_on_model_save is (cfg.deepspeed.stage == 3)
    assert (parsed.zero_config.offload_optimizer is not None) is cfg.deepspeed.offload_optimizer


def test_fused_adam_can_be_turned_off_on_gpus():
    def torch_adam(fused):
        cfg = build_ds_config(
            DeepSpeedConfig(), TrainerConfig(), OptimConfig(fused=fused), 2, "bf16", on_gpu=True
        )
        return cfg["optimizer"]["params"]["torch_adam"]

    # None follows the device; False avoids FusedAdam's CUDA JIT build on GPUs.
    assert (torch_adam(None), torch_adam(False), torch_adam(True)) == (False, True, False)
