"""Config section of `make plan` and of the fit check `make train`/`make finetune` run first
(planner/ reads it in the driver; nothing here starts Ray)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.fields import at_least, positive, require, setting


@dataclass
class PlanConfig:
    check: bool = setting(
        True, "before Ray starts, refuse a run whose per-device memory estimate does not fit"
    )
    tokens: float | None = setting(
        None, "tokens to train for the time and cost lines; null = trainer.max_steps' worth"
    )
    device_hour_price: float = setting(
        0.0, "price of one device-hour (your currency) for the cost line; 0 = no cost line"
    )
    mfu: float | None = setting(
        None,
        "model FLOP utilization the time estimate assumes; null = 0.4 on GPUs, 0.45 of the "
        "measured matmul rate on CPUs (what this machine's runs reach)",
    )
    interconnect_gb_per_s: float | None = setting(
        None,
        "bandwidth per device for ZeRO's collectives, GB/s; null = the GPU type's NVLink within "
        "a node, 50 (400 Gb/s InfiniBand) across nodes, 5 for gloo on CPUs",
    )
    memory_margin: float = setting(
        0.1, "share of device memory held back for buffers, fragmentation and the runtime"
    )
    micro_batch_sizes: list[int] = setting(
        factory=list, help="micro-batch sizes the alternatives try; [] = half, same and double"
    )

    def __post_init__(self) -> None:
        if self.tokens is not None:
            positive("plan.tokens", self.tokens)
        at_least("plan.device_hour_price", self.device_hour_price, 0)
        if self.mfu is not None:
            require(0 < self.mfu <= 1, "plan.mfu", "in (0, 1]", self.mfu)
        if self.interconnect_gb_per_s is not None:
            positive("plan.interconnect_gb_per_s", self.interconnect_gb_per_s)
        require(0 <= self.memory_margin < 1, "plan.memory_margin", "in [0, 1)", self.memory_margin)
        for size in self.micro_batch_sizes:
            positive("plan.micro_batch_sizes", size)
