"""A plan for people (a table and a picture of memory by kind) and for machines (JSON)."""

from __future__ import annotations

from dataclasses import asdict

from planner.alternatives import Plan, check_fit, why
from planner.estimate import Estimate
from planner.hardware import GIB
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig

KINDS = ("parameters", "gradients", "optimizer", "activations", "margin")


def _gib(x: float) -> str:
    return f"{x / GIB:,.1f}"


def _duration(hours: float) -> str:
    return (
        f"{hours * 60:,.1f} min"
        if hours < 1
        else f"{hours:,.1f} h"
        if hours < 48
        else f"{hours / 24:,.1f} d"
    )


def format_plan(plan: Plan, show: int = 8) -> str:
    hw, size, mine = plan.hardware, plan.size, plan.configured
    lines = [
        "=== zeroray plan ===",
        f"model         : {size.total:,} parameters ({size.trainable:,} trainable), "
        f"{size.num_layers} layers x {size.hidden_size}, vocab {size.vocab_size:,}",
        f"devices       : {hw.devices} x {hw.name}, {_gib(hw.device_memory_bytes)} GiB each, "
        f"{hw.peak_flops / 1e12:,.1f} TFLOP/s peak ({hw.peak_source}) at MFU {hw.mfu:.0%}, "
        f"{hw.interconnect_bytes_per_s / 1e9:,.0f} GB/s between devices",
        f"run           : {plan.precision}, seq_len {plan.seq_len}, "
        f"{plan.tokens:,.0f} tokens (compute-optimal for this size: about "
        f"{plan.compute_optimal_tokens:,.0f})",
        "",
        f"{'configuration':<46}{'GiB/device':>11}{'fits':>6}{'tokens/s':>12}{'time':>10}"
        + ("{:>12}".format("cost") if plan.device_hour_price else ""),
    ]
    shown = plan.alternatives[:show]
    if mine not in shown:
        shown.append(mine)
    for e in shown:
        mark = "* " if e is mine else "  "
        cost = (
            f"{plan.device_hours(e) * plan.device_hour_price:>12,.2f}"
            if plan.device_hour_price
            else ""
        )
        lines.append(
            f"{mark}{e.candidate.label():<44}{_gib(e.device_bytes):>11}"
            f"{'yes' if e.fits else 'NO':>6}{e.tokens_per_s:>12,.0f}"
            f"{_duration(plan.hours(e)):>10}{cost}"
        )
    lines += ["", "* the configured run, per device:", "  " + memory_line(mine, plan)]
    parts = ", ".join(f"{k} {v:.3g} s" for k, v in mine.parts_s.items() if v)
    lines.append(
        f"  step {mine.step_s:.3g} s ({parts}); {_gib(mine.comm_bytes_per_step)} GiB "
        f"sent per device per step; host memory per node {_gib(mine.cpu_bytes_per_node)} GiB"
    )
    lines.append(f"  {plan.device_hours(mine):,.1f} device-hours for {plan.tokens:,.0f} tokens")
    best = plan.recommended
    lines.append("")
    if best is not None:
        lines.append(f"recommended   : {best.candidate.label()} ({why(plan)})")
        if best is not mine:
            change = " ".join(best.candidate.overrides(against=mine.candidate))
            lines.append(f"                add to your overrides: {change}")
    else:
        lines.append(f"recommended   : nothing fits ({why(plan)})")
    return "\n".join(lines)


def memory_line(e: Estimate, plan: Plan) -> str:
    parts = ", ".join(f"{k} {_gib(e.memory[k])}" for k in KINDS)
    return (
        f"{_gib(e.device_bytes)} GiB needed of {_gib(e.usable_bytes)} usable "
        f"({parts} GiB held back)"
    )


def plan_json(plan: Plan) -> dict:
    def one(e: Estimate) -> dict:
        return {
            "label": e.candidate.label(),
            "candidate": asdict(e.candidate),
            "overrides": e.candidate.overrides(),
            "memory_bytes": e.memory,
            "device_bytes": e.device_bytes,
            "usable_bytes": e.usable_bytes,
            "fits": e.fits,
            "host_bytes_per_node": e.cpu_bytes_per_node,
            "step_s": e.step_s,
            "step_parts_s": e.parts_s,
            "tokens_per_s": e.tokens_per_s,
            "comm_bytes_per_step": e.comm_bytes_per_step,
            "hours": plan.hours(e),
            "device_hours": plan.device_hours(e),
            "cost": plan.device_hours(e) * plan.device_hour_price,
        }

    best = plan.recommended
    return {
        "model": asdict(plan.size),
        "hardware": asdict(plan.hardware),
        "precision": plan.precision,
        "seq_len": plan.seq_len,
        "tokens": plan.tokens,
        "compute_optimal_tokens": plan.compute_optimal_tokens,
        "configured": one(plan.configured),
        "recommended": one(best) if best else None,
        "why": why(plan),
        "alternatives": [one(e) for e in plan.alternatives],
    }


def plot_plan(plan: Plan, path: str, show: int = 8) -> None:
    """Memory per device stacked by kind for the configured run and the fastest alternatives,
    with the device's memory as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = plan.alternatives[:show]
    if plan.configured not in shown:
        shown.append(plan.configured)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bottom = [0.0] * len(shown)
    for kind in KINDS:
        values = [e.memory[kind] / GIB for e in shown]
        ax.barh(range(len(shown)), values, left=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.axvline(
        plan.hardware.device_memory_bytes / GIB,
        color="black",
        linestyle="--",
        label="device memory",
    )
    labels = [("* " if e is plan.configured else "") + e.candidate.label() for e in shown]
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("GiB per device")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def refuse_if_it_does_not_fit(cfg: TrainJobConfig) -> None:
    """One line with the numbers and the plan's suggestion, before any cluster resource."""
    if not cfg.plan.check:
        return
    plan = check_fit(cfg)
    if plan is None:
        return
    mine, best = plan.configured, plan.recommended
    gib = 1024**3
    parts = ", ".join(f"{k} {mine.memory[k] / gib:.1f}" for k in KINDS[:-1])
    advice = (
        f"e.g. {' '.join(best.candidate.overrides(against=mine.candidate))} "
        f"({best.candidate.label()}: {best.device_bytes / gib:.1f} GiB)"
        if best
        else "more devices, a smaller model or shorter sequences (nothing planned fits)"
    )
    raise ConfigError(
        f"plan: {mine.candidate.label()} needs {mine.device_bytes / gib:.1f} GiB per device "
        f"({parts}) but {mine.usable_bytes / gib:.1f} GiB are usable; allowed: a "
        f"configuration that fits, {advice}, or plan.check=false (`make plan` shows all)"
    )
