"""The scaling section of a training run: how many Ray Train workers, on what, placed how.
``__post_init__`` only checks: the worker range and the peak FLOP/s a GPU type implies are
properties, derived on every read, so nothing rewrites the section after validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.fields import at_least, one_of, positive, require, setting

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
        if self.device_memory_gib is not None:
            positive("scaling.device_memory_gib", self.device_memory_gib)
        if self.use_gpu:
            positive("scaling.gpus_per_node", self.gpus_per_node)
        if self.num_workers is None:
            require(
                self.use_gpu, "scaling.num_workers", "required when scaling.use_gpu=false", None
            )
        self.worker_range()  # raises on a bad count or range
        positive("scaling.worker_start_timeout_s", self.worker_start_timeout_s)
        at_least(
            "scaling.elastic_resize_monitor_interval_s", self.elastic_resize_monitor_interval_s, 0
        )

    def worker_range(self) -> tuple[int, int]:
        """(min, max) workers; equal for a fixed count."""
        value = self.num_workers
        if value is None:
            value = self.num_nodes * self.gpus_per_node
        return _worker_range(value)

    @property
    def elastic(self) -> bool:
        low, high = self.worker_range()
        return low != high

    @property
    def min_workers(self) -> int:
        return self.worker_range()[0]

    @property
    def max_workers(self) -> int:
        """The group's full size: what the global batch and the plan are set for."""
        return self.worker_range()[1]

    def worker_counts(self) -> range:
        return range(self.min_workers, self.max_workers + 1)

    @property
    def peak_flops(self) -> float | None:
        """Dense peak FLOP/s of one device: the setting, else the GPU type's (None: measure)."""
        if self.peak_flops_per_device is not None:
            return self.peak_flops_per_device
        return GPU_SPECS[self.gpu_type][1] if self.gpu_type else None


def _worker_range(value: Any) -> tuple[int, int]:
    """A positive count n is (n, n); [min, max] needs 1 <= min <= max."""
    allowed = "a count > 0, or [min, max] with 1 <= min <= max"
    if isinstance(value, (list, tuple)):
        counts = list(value)
        ok = len(counts) == 2 and all(type(c) is int for c in counts)
        require(ok and 1 <= counts[0] <= counts[1], "scaling.num_workers", allowed, counts)
        return counts[0], counts[1]
    require(type(value) is int and value > 0, "scaling.num_workers", allowed, value)
    return value, value
