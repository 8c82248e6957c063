"""A plan: the configured run and the alternatives worth considering, each estimated, and
the recommendation (the fastest that fits).

Alternatives keep the global batch: a micro-batch size is tried only where the gradient
accumulation steps can make up the same batch.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from planner.estimate import Candidate, Estimate, estimate
from planner.hardware import Hardware, resolve_hardware
from planner.model_size import ModelSize, measure_model
from schemas.jobs import FinetuneJobConfig, TrainJobConfig
from schemas.precision import resolve_precision

COMPUTE_OPTIMAL_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022 ("Chinchilla")
TIE = 0.01  # estimates closer than this are not worth changing a working configuration for


@dataclass
class Plan:
    size: ModelSize
    hardware: Hardware
    precision: str
    seq_len: int
    configured: Estimate
    alternatives: list[Estimate]  # the configured one included, fastest first
    tokens: float
    device_hour_price: float

    @property
    def recommended(self) -> Estimate | None:
        """The fastest that fits; the configured run when nothing fitting is >1% faster."""
        best = next((e for e in self.alternatives if e.fits), None)
        mine = self.configured
        if best and mine.fits and best.tokens_per_s <= mine.tokens_per_s * (1 + TIE):
            return mine
        return best

    def hours(self, e: Estimate) -> float:
        return self.tokens / e.tokens_per_s / 3600

    def device_hours(self, e: Estimate) -> float:
        return self.hours(e) * self.hardware.devices

    @property
    def compute_optimal_tokens(self) -> float:
        return COMPUTE_OPTIMAL_TOKENS_PER_PARAM * self.size.total


def configured_candidate(cfg: TrainJobConfig) -> Candidate:
    return Candidate(
        stage=cfg.deepspeed.stage,
        offload_optimizer=cfg.deepspeed.offload_optimizer,
        offload_param=cfg.deepspeed.offload_param,
        gradient_checkpointing=cfg.trainer.gradient_checkpointing,
        micro_batch_size=cfg.trainer.micro_batch_size,
        grad_accum_steps=cfg.trainer.grad_accum_steps,
        lora=cfg.lora.enabled,
    )


def is_finetuning(cfg: TrainJobConfig) -> bool:
    return isinstance(cfg, FinetuneJobConfig)


def candidates(cfg: TrainJobConfig) -> list[Candidate]:
    per_device = cfg.trainer.micro_batch_size * cfg.trainer.grad_accum_steps
    micros = cfg.plan.micro_batch_sizes or [
        max(1, cfg.trainer.micro_batch_size // 2),
        cfg.trainer.micro_batch_size,
        cfg.trainer.micro_batch_size * 2,
    ]
    offloads = [(False, False), (True, False), (True, True)]
    loras = (False, True) if is_finetuning(cfg) else (cfg.lora.enabled,)
    found = {configured_candidate(cfg)}
    for stage, (opt, param), ckpt, micro, lora in itertools.product(
        range(4), offloads, (False, True), sorted(set(micros)), loras
    ):
        if (opt and stage == 0) or (param and stage != 3) or per_device % micro:
            continue
        if lora and stage == 3:  # refused by the config (schemas/jobs.py)
            continue
        found.add(Candidate(stage, opt, param, ckpt, micro, per_device // micro, lora))
    return sorted(found, key=lambda c: c.label())


def make_plan(cfg: TrainJobConfig, size: ModelSize | None = None) -> Plan:
    sizes = {cfg.lora.enabled: size or measure_model(cfg)}
    if is_finetuning(cfg):  # the other side: full fine-tuning, or LoRA with its settings
        other = dataclasses.replace(cfg.lora, enabled=not cfg.lora.enabled)
        sizes[other.enabled] = measure_model(cfg, lora=other)
    return _plan(cfg, sizes, resolve_hardware(cfg), candidates(cfg))


def check_fit(cfg: TrainJobConfig) -> Plan | None:
    """None when the configured run fits its devices; else the whole plan, for its advice.
    The fit alone needs no speed figures, so CPU workers are not probed unless it fails."""
    size = measure_model(cfg)
    hw = resolve_hardware(cfg, measure=False)
    only = _plan(cfg, {cfg.lora.enabled: size}, hw, [configured_candidate(cfg)])
    return None if only.configured.fits else make_plan(cfg, size)


def _plan(
    cfg: TrainJobConfig, sizes: dict[bool, ModelSize], hw: Hardware, cands: list[Candidate]
) -> Plan:
    """``sizes``: the model's size without (False) and with (True) the LoRA adapter."""
    precision = cfg.trainer.precision
    if precision == "auto":  # every GPU type planned for computes bf16; this machine may not
        precision = "bf16" if hw.on_gpu else resolve_precision("auto", on_gpu=False)
    stores_scores = cfg.model.attn_implementation == "eager"
    seq_len = cfg.trainer.seq_len
    estimates = [
        estimate(sizes[c.lora], c, hw, seq_len, precision, stores_scores, cfg.plan.memory_margin)
        for c in cands
    ]
    estimates.sort(key=lambda e: (-e.tokens_per_s, e.device_bytes))
    mine = configured_candidate(cfg)
    global_tokens = cfg.trainer.micro_batch_size * cfg.trainer.grad_accum_steps * seq_len
    return Plan(
        size=sizes[cfg.lora.enabled],
        hardware=hw,
        precision=precision,
        seq_len=seq_len,
        configured=next(e for e in estimates if e.candidate == mine),
        alternatives=estimates,
        tokens=cfg.plan.tokens or cfg.trainer.max_steps * global_tokens * hw.devices,
        device_hour_price=cfg.plan.device_hour_price,
    )


def why(plan: Plan) -> str:
    """One sentence on the recommendation against the configured run."""
    best, mine = plan.recommended, plan.configured
    if best is None:
        return "no alternative fits: more devices, a smaller model or shorter sequences"
    if best.candidate == mine.candidate:
        return "the configured run is the fastest that fits"
    speed = best.tokens_per_s / mine.tokens_per_s
    caveat = ""
    if best.candidate.lora != mine.candidate.lora:
        caveat = "; LoRA or not changes what is learned, not only the speed: compare with make eval"
    if not mine.fits:
        return (
            f"the configured run does not fit; this fits at {speed:.2f}x its estimated speed"
            + caveat
        )
    return f"{speed:.2f}x the configured run's tokens/s, and fits{caveat}"
