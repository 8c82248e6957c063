"""Throughput and MFU arithmetic, metrics.jsonl + TensorBoard on rank 0, and loss.png."""

from __future__ import annotations

import json
import math
from pathlib import Path


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

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
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


class MetricsWriter:
    """Appends one JSON line per record and mirrors scalars to TensorBoard (rank 0 only)."""

    def __init__(self, run_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss(metrics_path: str | Path, out_path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
