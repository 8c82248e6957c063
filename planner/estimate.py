"""Memory, speed and cost of one training configuration (a Candidate) on given Hardware.

Model states follow DeepSpeed's own accounting (its `estimate_zero2/3_model_states_mem_needs`;
a unit test checks they agree, another that real engines hold what is planned): with 16-bit
training a parameter costs 2 bytes of weights, 2 + 4 bytes of 16-bit and fp32 gradients,
4 bytes of fp32 master weights and 8 bytes of Adam moments. ZeRO-1 partitions the optimizer
state over the devices; DeepSpeed's ZeRO-1 then also keeps only its partition of the reduced
gradients, as ZeRO-2 does (they differ in when they communicate); ZeRO-3 partitions the
weights too, gathering one layer at a time, and keeps small tensors whole. In fp32 (CPUs)
ZeRO 1-3 still keep an fp32 copy of their partition; plain data parallelism does not.
Activations follow Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models"): 34 s b h bytes per layer in 16 bits, plus
5 a s^2 b for the attention scores unless the attention kernel never stores them (sdpa).
Speed: FLOPs per token (trainer/metrics.py) at the stated MFU, plus ZeRO's communication
and offload traffic, not overlapped with compute (an upper bound on step time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.hardware import PCIE_GB_PER_S, Hardware
from planner.model_size import ModelSize
from trainer.metrics import flops_per_token

CPU_ADAM_PARAMS_PER_S = 1e9  # DeepSpeedCPUAdam on one device's share of a node's cores
BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor for host memory


@dataclass(frozen=True)
class Candidate:
    stage: int
    offload_optimizer: bool
    offload_param: bool
    gradient_checkpointing: bool
    micro_batch_size: int
    grad_accum_steps: int
    lora: bool = False  # a LoRA adapter trains instead of every weight

    def label(self) -> str:
        parts = [
            f"ZeRO-{self.stage}",
            f"micro {self.micro_batch_size} x accum {self.grad_accum_steps}",
        ]
        if self.lora:
            parts.append("LoRA")
        if self.gradient_checkpointing:
            parts.append("grad ckpt")
        if self.offload_optimizer:
            parts.append("offload opt" + (" + params" if self.offload_param else ""))
        return ", ".join(parts)

    def overrides(self, against: Candidate | None = None) -> list[str]:
        """What to pass to `make train` (ARGS=...) to run this candidate; with ``against``,
        only the settings that differ from it."""
        every = [
            f"deepspeed.stage={self.stage}",
            f"deepspeed.offload_optimizer={str(self.offload_optimizer).lower()}",
            f"deepspeed.offload_param={str(self.offload_param).lower()}",
            f"trainer.gradient_checkpointing={str(self.gradient_checkpointing).lower()}",
            f"trainer.micro_batch_size={self.micro_batch_size}",
            f"trainer.grad_accum_steps={self.grad_accum_steps}",
            f"lora.enabled={str(self.lora).lower()}",
        ]
        if against is None:
            return every
        return [o for o in every if o not in against.overrides()]


@dataclass
class Estimate:
    candidate: Candidate
    memory: dict[str, float]  # bytes per device by kind, the margin included
    usable_bytes: float  # device memory less the margin
    cpu_bytes_per_node: float
    step_s: float
    tokens_per_s: float  # all devices together
    comm_bytes_per_step: float  # per device
    parts_s: dict[str, float] = field(default_factory=dict)  # compute, communication, offload

    @property
    def device_bytes(self) -> float:
        return sum(v for k, v in self.memory.items() if k != "margin")

    @property
    def fits(self) -> bool:
        return self.device_bytes <= self.usable_bytes


def model_state_bytes(
    size: ModelSize, c: Candidate, devices: int, devices_per_node: int, bits16: bool
) -> tuple[dict[str, float], float]:
    """({parameters, gradients, optimizer}: bytes per device, host bytes per node)."""
    p, t, n, nodes = size.total, size.trainable, devices, max(1, devices // devices_per_node)
    weight_b = 2 if bits16 else 4
    grad_b = 2 + 4 if bits16 else 4  # 16-bit gradients and their fp32 copy
    optim_b = 4 + 8 if bits16 or c.stage else 8  # fp32 master (or partition copy), 2 moments
    gathered = 4 * size.largest_layer  # ZeRO-3: one layer's 16-bit weights and gradients
    if c.stage == 0:
        weights, grads, optim = weight_b * p, grad_b * t, optim_b * t
    elif c.stage <= 2:
        weights, grads, optim = weight_b * p, grad_b * t / n, optim_b * t / n
    else:
        weights, grads, optim = zero3_weight_bytes(size, n, bits16), grad_b * t / n, optim_b * t / n
    states = {"parameters": weights, "gradients": grads, "optimizer": optim}
    host = 4 * p * devices_per_node * BUFFER_FACTOR  # each process builds the model in fp32
    if c.offload_optimizer:
        states["gradients"] = states["optimizer"] = 0.0
        if c.stage < 3:
            host = p * max(4 * n, 16) * BUFFER_FACTOR  # DeepSpeed's ZeRO-2 offload figure
        elif c.offload_param:
            states["parameters"] = gathered
            host = p * 18 / nodes * BUFFER_FACTOR
        else:
            states["parameters"] = gathered + 2 * p / n
            host = p * 16 / nodes * BUFFER_FACTOR
    elif c.stage == 3:
        host = size.largest_layer * 4 * devices_per_node * BUFFER_FACTOR  # built in zero.Init
    return states, host


def zero3_weight_bytes(size: ModelSize, devices: int, bits16: bool) -> float:
    """The gathered largest layer (DeepSpeed's 4 bytes per parameter of it), the tensors
    too small to partition, whole, and in fp32 the weight partition itself (in 16-bit
    training DeepSpeed's figure counts the partition with the fp32 master weights)."""
    weight_b = 2 if bits16 else 4
    partition = 0 if bits16 else 4 * size.total / devices
    return 4 * size.largest_layer + weight_b * size.persistent + partition


def activation_bytes(
    size: ModelSize, c: Candidate, seq_len: int, bits16: bool, stores_scores: bool
) -> float:
    s, b, h, a = seq_len, c.micro_batch_size, size.hidden_size, size.num_heads
    scale = 1 if bits16 else 2  # the paper counts 16-bit activations
    per_layer = s * b * h * (34 + (5 * a * s / h if stores_scores else 0)) * scale
    # Logits in the training dtype, their fp32 copy for the loss, and its gradient.
    logits = s * b * size.vocab_size * ((2 if bits16 else 4) + 8)
    if c.gradient_checkpointing:  # each layer keeps its input; one layer is recomputed at a time
        return size.num_layers * s * b * h * 2 * scale + per_layer + logits
    return size.num_layers * per_layer + logits


def step_seconds(
    size: ModelSize, c: Candidate, hw: Hardware, seq_len: int, bits16: bool
) -> tuple[dict[str, float], float]:
    """({compute, communication, offload}: seconds per optimizer step, comm bytes/device)."""
    p, t, n = size.total, size.trainable, hw.devices
    flops = flops_per_token(p, size.num_layers, size.hidden_size, seq_len)
    flops -= 2 * (p - t)  # frozen weights (LoRA) get no weight gradients
    if c.gradient_checkpointing:
        flops += flops_per_token(p, size.num_layers, size.hidden_size, seq_len) / 3  # 1 more fwd
    tokens = c.micro_batch_size * c.grad_accum_steps * seq_len  # per device
    compute = tokens * flops / (hw.peak_flops * hw.mfu)
    b = 2 if bits16 else 4
    ring = 2 * (n - 1) / n if n > 1 else 0.0  # bytes a ring all-reduce moves per byte reduced
    if c.stage <= 1:  # one all-reduce of the gradients per optimizer step
        comm = ring * t * b
    elif c.stage == 2:  # reduce-scatter every micro-batch, all-gather of updated weights
        comm = ring / 2 * (c.grad_accum_steps * t * b + p * b)
    else:  # all-gather weights in forward and backward, reduce-scatter gradients, per micro
        comm = ring / 2 * c.grad_accum_steps * (2 * p * b + t * b)
    offload = 0.0
    if c.offload_optimizer:  # gradients to the host, updated weights back, Adam on the CPU
        offload = (4 + b) * t / n / (PCIE_GB_PER_S * 1e9) + t / n / CPU_ADAM_PARAMS_PER_S
    if c.offload_param:  # every micro-batch fetches this device's weight partition twice
        offload += c.grad_accum_steps * 2 * p * b / n / (PCIE_GB_PER_S * 1e9)
    parts = {
        "compute": compute,
        "communication": comm / hw.interconnect_bytes_per_s,
        "offload": offload,
    }
    return parts, comm


def estimate(
    size: ModelSize,
    c: Candidate,
    hw: Hardware,
    seq_len: int,
    precision: str,
    stores_scores: bool,
    margin: float,
) -> Estimate:
    bits16 = precision in ("bf16", "fp16")
    states, host = model_state_bytes(size, c, hw.devices, hw.devices_per_node, bits16)
    memory = {**states, "activations": activation_bytes(size, c, seq_len, bits16, stores_scores)}
    memory["margin"] = margin * hw.device_memory_bytes
    parts, comm = step_seconds(size, c, hw, seq_len, bits16)
    step_s = sum(parts.values())
    tokens = c.micro_batch_size * c.grad_accum_steps * seq_len * hw.devices
    return Estimate(
        candidate=c,
        memory=memory,
        usable_bytes=hw.device_memory_bytes - memory["margin"],
        cpu_bytes_per_node=host,
        step_s=step_s,
        tokens_per_s=tokens / step_s,
        comm_bytes_per_step=comm,
        parts_s=parts,
    )
