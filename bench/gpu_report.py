"""The table bench/gpu.py prints last: one line per figure of a GPU (or CPU smoke) run."""

from __future__ import annotations


def table(r: dict) -> str:
    rows = [
        ("device", f"{r['device']} x {r['world_size']}"),
        ("model", f"{r['model']}, {r['parameters'] / 1e6:,.1f}M parameters"),
        (
            "setup",
            f"ZeRO-{r['zero_stage']}, {r['precision']}, {r['attention']} attention, "
            f"{r['optimizer']}, grad ckpt {'on' if r['gradient_checkpointing'] else 'off'}",
        ),
        (
            "batch",
            f"seq {r['seq_len']} x micro {r['micro_batch']} x accum {r['grad_accum']} "
            f"x {r['world_size']} = {r['global_batch_tokens']:,} tokens/step",
        ),
        ("steps", f"{r['warmup_steps']} warmup + {r['timed_steps']} timed in {r['timed_s']:.2f} s"),
        (
            "step time",
            f"{r['step_s_median'] * 1e3:,.1f} ms median, {r['step_s_min'] * 1e3:,.1f} min",
        ),
        ("tokens/s per device", f"{r['tokens_per_s_per_device']:,.0f}"),
        ("tokens/s total", f"{r['tokens_per_s_total']:,.0f}"),
        (
            "MFU",
            f"{r['mfu']:.1%} (6N + attention, all parameters); "
            f"{r['mfu_excluding_embedding']:.1%} without the input embedding",
        ),
        ("peak FLOP/s", f"{_flops(r['peak_flops_per_device'])} ({r['peak_flops_source']})"),
        (
            "peak memory",
            f"{r['peak_memory_allocated_gib']:.1f} GiB allocated, "
            f"{r['peak_memory_reserved_gib']:.1f} GiB reserved"
            if r["memory_kind"] == "device"
            else f"{r['peak_memory_allocated_gib']:.2f} GiB (host RSS)",
        ),
        ("loss", f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} (random tokens)"),
        ("ray imported", str(r["ray_imported"])),
        ("results", r["json"]),
    ]
    width = max(len(k) for k, _ in rows)
    rule = "=" * (width + 3 + max(len(v) for _, v in rows))
    title = "=== zeroray GPU training benchmark"
    title += " ===" if r["benchmark"] == "gpu-train" else " (CPU smoke run) ==="
    return "\n".join([rule, title, *(f"{k:<{width}} : {v}" for k, v in rows), rule])


def _flops(value: float) -> str:
    return f"{value / 1e12:,.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:,.1f} GFLOP/s"
