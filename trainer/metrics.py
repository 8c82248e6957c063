"""Throughput and MFU arithmetic, metrics.jsonl + TensorBoard on rank 0, and loss.png."""

from __future__ import annotations

import math
import time
from pathlib import Path

from rundir import layout
from rundir.metrics_file import copy_until, metrics_line, read_metrics, worker_segments


def flops_per_token(num_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the dense matmuls (forward + backward) plus the
    attention score/value matmuls, 12 * layers * hidden * seq (PaLM paper, appendix B)."""
    return 6.0 * num_params + 12.0 * num_layers * hidden_size * seq_len


def mfu(
    tokens_per_s: float, flops_per_tok: float, peak_flops_per_device: float, num_devices: int
) -> float:
    return tokens_per_s * flops_per_tok / (peak_flops_per_device * num_devices)


def measure_matmul_flops(device, dtype, size: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of a square matmul on this worker's device and threads: the attainable peak
    that CPU MFU is measured against (CPUs have no spec-sheet figure per thread count)."""
    import time

    import torch

    # A private generator: drawing from the global one would shift the dropout masks of a
    # resumed run away from those of the uninterrupted run.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            c = a @ b
        float(c[0, 0])  # forces completion on asynchronous devices
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # clamp: exp of an untrained loss can overflow


class Throughput:
    """Mean loss and tokens/s over the steps since the last log line, and MFU."""

    def __init__(self, engine, cfg, global_batch: int, world_size: int, device):
        from trainer.model import count_parameters

        self.engine, self.world_size = engine, world_size
        self.tokens_per_step = global_batch * cfg.trainer.seq_len
        self.num_params = count_parameters(engine.module)
        arch = engine.module.config
        self.flops_per_token = flops_per_token(
            # The built model's own shape: with from_pretrained the config's fields are unused.
            self.num_params,
            arch.num_hidden_layers,
            arch.hidden_size,
            cfg.trainer.seq_len,
        )
        dtype = next(engine.module.parameters()).dtype
        self.peak = cfg.scaling.peak_flops or measure_matmul_flops(device, dtype)
        self.zero_stage = cfg.deepspeed.stage
        self.started = self.window_start = time.perf_counter()
        self.steps, self.loss_sum = 0, 0.0

    def step(self, loss) -> None:
        self.steps += 1
        self.loss_sum = self.loss_sum + loss  # stays a tensor: no device sync per step

    def window(self) -> dict:
        now = time.perf_counter()
        tps = self.steps * self.tokens_per_step / (now - self.window_start)
        import torch
        import torch.distributed as dist

        # Each rank's figure is W x its share of the global token-loss sum (step.py): their
        # mean is the global batch's mean token loss, the same on any number of workers.
        loss = torch.as_tensor(self.loss_sum, dtype=torch.float32).clone()
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        metrics = {
            "loss": float(loss) / self.steps,
            "lr": self.engine.get_lr()[0],
            "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
            "tokens_per_s": tps,
            "mfu": mfu(tps, self.flops_per_token, self.peak, self.world_size),
        }
        self.window_start, self.steps, self.loss_sum = now, 0, 0.0
        return metrics

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def banner(self, ds_config: dict, resumed_from: int) -> str:
        precision = "bf16" if ds_config["bf16"]["enabled"] else "fp32"
        resumed = f", resumed at step {resumed_from}" if resumed_from else ""
        return (
            f"{self.num_params:,} parameters, ZeRO-{self.zero_stage}, "
            f"{self.world_size} workers, {self.tokens_per_step:,} tokens/step, precision "
            f"{precision}, MFU against {self.peak / 1e9:,.0f} GFLOP/s per device{resumed}"
        )


class MetricsWriter:
    """Appends one JSON line per record and mirrors scalars to TensorBoard (rank 0 only).

    A worker group restarted after a failure continues from ``resume_step`` (0 when no
    checkpoint was registered yet): the records after that step, written before the crash
    and about to be redone, are dropped from metrics.jsonl, and TensorBoard is told to purge
    them, so both curves continue instead of doubling back."""

    def __init__(self, run_dir: str, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / layout.METRICS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        purge_step = None
        if self.path.exists():
            copy_until(self.path, self.path, resume_step)
            purge_step = resume_step + 1 if resume_step else 0
        self._file = self.path.open("a", encoding="utf-8")
        tensorboard = str(Path(run_dir) / layout.TENSORBOARD)
        self._tb = SummaryWriter(log_dir=tensorboard, purge_step=purge_step)

    def write(self, step: int, metrics: dict) -> None:
        self._file.write(metrics_line(step, metrics))
        self._file.flush()
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and key != "started_at_step":  # not a curve
                self._tb.add_scalar(key, value, step)

    def flush(self) -> None:
        """TensorBoard's buffered events on disk (metrics.jsonl is flushed every line)."""
        self._tb.flush()

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def plot_loss(metrics_path: str | Path, out_path: str | Path) -> None:
    """The loss curves, with a mark at every restart of the worker group (an elastic resize
    or a recovery); for preference tuning a second panel with the reward accuracy and
    margin, training and held-out."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    rewards = any("reward_accuracy" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if rewards else 1, figsize=(12 if rewards else 7, 4))
    ax = axes[0] if rewards else axes
    _curves(ax, rows, [("loss", "train loss", None), ("val_loss", "validation loss", "o")])
    ax.set_ylabel("DPO loss" if rewards else "cross-entropy (nats/token)")
    segments = worker_segments(rows)
    for before, after in zip(segments, segments[1:]):
        ax.axvline(after["first_step"] - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"{before['workers']} -> {after['workers']} workers"
            if before["workers"] != after["workers"]
            else "restart",
            (after["first_step"], 0.98),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
            rotation=90,
        )
    if rewards:
        _curves(
            axes[1],
            rows,
            [
                ("reward_accuracy", "train reward accuracy", None),
                ("val_reward_accuracy", "validation reward accuracy", "o"),
                ("reward_margin", "train reward margin", None),
                ("val_reward_margin", "validation reward margin", "o"),
            ],
        )
        axes[1].set_ylabel("accuracy / margin (nats x beta)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)


def _curves(ax, rows: list[dict], series: list[tuple]) -> None:
    for key, label, marker in series:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker=marker, label=label)
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    ax.legend()
