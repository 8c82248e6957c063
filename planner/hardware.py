"""The devices a plan assumes: memory, peak FLOP/s, utilization and interconnect, from the
scaling and plan sections (GPU spec sheets, or this machine for CPU workers)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from schemas.jobs import TrainJobConfig
from schemas.scaling import GPU_SPECS

GIB = 1024**3
GPU_MFU = 0.4  # what well-tuned dense training reaches on current GPUs
CPU_MFU = 0.45  # of the measured matmul rate: what `make bench` measured here (0.44-0.49)
CROSS_NODE_GB_PER_S = 50.0  # 400 Gb/s InfiniBand or EFA per GPU
GLOO_CPU_GB_PER_S = 5.0  # gloo over shared memory between processes on one CPU node
PCIE_GB_PER_S = 25.0  # host <-> device, for offloaded optimizer state and parameters


@dataclass
class Hardware:
    name: str
    devices: int  # Ray Train workers
    devices_per_node: int
    device_memory_bytes: float
    node_memory_bytes: float  # host memory per node, for offloaded state
    peak_flops: float  # per device
    peak_source: str
    mfu: float
    interconnect_bytes_per_s: float  # per device, for ZeRO's collectives
    on_gpu: bool


def node_memory_bytes() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_hardware(cfg: TrainJobConfig, measure: bool = True) -> Hardware:
    """``measure=False``: no matmul probe on CPU workers (for memory-only checks)."""
    scaling, plan = cfg.scaling, cfg.plan
    devices = scaling.max_workers  # an elastic run is planned at its full size
    per_node = -(-devices // scaling.num_nodes)
    spec = GPU_SPECS.get(scaling.gpu_type) if scaling.gpu_type else None
    if scaling.use_gpu:
        memory = (scaling.device_memory_gib or (spec[0] if spec else 80)) * GIB
        peak = scaling.peak_flops_per_device or (spec[1] if spec else GPU_SPECS["H100"][1])
        source = "scaling.peak_flops_per_device" if spec is None else f"{scaling.gpu_type} spec"
        link = CROSS_NODE_GB_PER_S if scaling.num_nodes > 1 else (spec[2] if spec else 450)
        mfu, name = plan.mfu or GPU_MFU, scaling.gpu_type or "GPU"
        host = node_memory_bytes()  # this machine's: state on a GPU node's host is a guess
    else:
        host = node_memory_bytes()
        memory = (scaling.device_memory_gib * GIB) if scaling.device_memory_gib else host / per_node
        peak, source = scaling.peak_flops_per_device, "scaling.peak_flops_per_device"
        if peak is None and measure:
            peak, source = _cpu_matmul_flops(scaling.cpus_per_worker), "matmul measured here"
        elif peak is None:
            peak, source = float("nan"), "not measured"
        link, mfu, name = GLOO_CPU_GB_PER_S, plan.mfu or CPU_MFU, "CPU worker"
    return Hardware(
        name=name,
        devices=devices,
        devices_per_node=per_node,
        device_memory_bytes=memory,
        node_memory_bytes=host,
        peak_flops=peak,
        peak_source=source,
        mfu=mfu,
        interconnect_bytes_per_s=(plan.interconnect_gb_per_s or link) * 1e9,
        on_gpu=scaling.use_gpu,
    )


def _cpu_matmul_flops(threads: int) -> float:
    """What a CPU worker with ``threads`` cores multiplies per second (trainer/metrics.py
    measures the same at the start of every run, as its MFU denominator)."""
    import torch

    from trainer.metrics import measure_matmul_flops

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure_matmul_flops(torch.device("cpu"), torch.float32, size=512, repeats=4)
    finally:
        torch.set_num_threads(before)
