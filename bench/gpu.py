"""GPU training benchmark: a ~1.1B-parameter Llama built from config, DeepSpeed ZeRO-2, bf16,
PyTorch SDPA attention, sequence length 2048, on random token ids. No Ray, no downloads.

    python -m bench.gpu                                  # one GPU, single process
    torchrun --nproc_per_node=8 -m bench.gpu             # one process per GPU
    python -m bench.gpu --micro-batch 16 --grad-ckpt     # other settings, see --help
    python -m bench.gpu --cpu-smoke                      # tiny fp32 model on gloo (tests)

It runs the trainer's own worker pieces (``trainer.engine.build_engine``,
``trainer.step.train_step``, ``trainer.metrics``) in a plain torch.distributed process
group; world size and rank come from the environment (torchrun sets them, a bare ``python``
gets world size 1). After ``--warmup`` steps it synchronises the device, times ``--steps``
steps, and reports tokens/s per GPU, MFU against the device's bf16 dense peak and peak memory.
The results table is printed last; the same figures go to ``bench/results/gpu-<ts>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.gpu_report import table

# Dense bf16 peak FLOP/s per device, by a substring of torch.cuda.get_device_name().
# First match wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (HBM3)
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)

LLAMA_1B = dict(  # conf/model/llama-1b.yaml (TinyLlama-1.1B's shape)
    model_type="llama",
    hidden_size=2048,
    num_layers=22,
    num_heads=32,
    num_kv_heads=4,
    intermediate_size=5632,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)
LLAMA_SMOKE = dict(
    model_type="llama",
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)
MODELS = {"llama-1b": LLAMA_1B}


class RandomTokenizer:
    """What build_model reads from a tokenizer: its length and the special token ids."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return self.vocab_size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="llama-1b", choices=sorted(MODELS))
    p.add_argument("--seq-len", type=int, default=None, help="default 2048 (smoke: 64)")
    p.add_argument("--micro-batch", type=int, default=None, help="per GPU; default 8 (smoke: 2)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="timed steps; default 20 (smoke: 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps; default 3 (smoke: 1)")
    p.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    p.add_argument("--vocab", type=int, default=None, help="default 32000 (smoke: 512)")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    p.add_argument(
        "--optimizer",
        default="auto",
        choices=("auto", "fused", "torch"),
        help="fused = DeepSpeed FusedAdam (JIT-built with nvcc and ninja unless prebuilt); "
        "torch = torch.optim.AdamW; auto = fused if prebuilt into DeepSpeed, else torch",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak per device")
    p.add_argument("--out", default=None, help="JSON path; default bench/results/gpu-<ts>.json")
    p.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny Llama (hidden 64, 2 layers), seq 64, 3 steps, fp32, gloo: a correctness run",
    )
    args = p.parse_args(argv)
    smoke = args.cpu_smoke
    defaults = dict(seq_len=(64, 2048), micro_batch=(2, 8), steps=(3, 20), warmup=(1, 3))
    defaults["vocab"] = (512, 32000)
    for key, (small, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if smoke else full)
    for key in ("seq_len", "micro_batch", "grad_accum", "steps", "vocab"):
        if getattr(args, key) <= 0:
            p.error(f"--{key.replace('_', '-')} must be > 0")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def setup_distributed_env(cpu: bool) -> tuple[int, int, int]:
    """torchrun's variables, with single-process defaults; torch.distributed reads them."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:  # a free port: parallel runs on one machine don't clash
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    if cpu:
        # DeepSpeed picks its accelerator on import: force the CPU one for the smoke run.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override is not None:
        return override
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def fused_adam_prebuilt() -> bool:
    """FusedAdam is CUDA code: prebuilt into the DeepSpeed wheel (DS_BUILD_FUSED_ADAM=1), or
    JIT-built at initialize(), which needs nvcc and ninja and about a minute. Under ZeRO the
    optimizer steps a few flat fp32 partitions, where torch's AdamW is about as fast, so
    ``auto`` takes FusedAdam only when it is already built."""
    try:
        from deepspeed.git_version_info import installed_ops
    except ImportError:
        return False
    return bool(installed_ops.get("fused_adam"))


def optimizer_choice(args: argparse.Namespace, on_gpu: bool) -> str:
    """fused (DeepSpeed's FusedAdam) or torch (AdamW); auto = fused where it is prebuilt."""
    if args.optimizer == "auto":
        return "fused" if on_gpu and fused_adam_prebuilt() else "torch"
    if args.optimizer == "fused" and not on_gpu:
        raise SystemExit("error: --optimizer fused needs a CUDA GPU")
    return args.optimizer


def random_batches(vocab: int, micro_batch: int, seq_len: int, device, seed: int):
    """Random token ids made on the device: no loader, no host-to-device copies."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    while True:
        yield {
            "input_ids": torch.randint(
                0, vocab, (micro_batch, seq_len), device=device, generator=gen
            )
        }


def run(args: argparse.Namespace) -> dict:
    rank, world, local_rank = setup_distributed_env(args.cpu_smoke)

    import torch
    import torch.distributed as dist

    on_gpu = not args.cpu_smoke
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible; use --cpu-smoke for a CPU run")
    if on_gpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        device_name = torch.cuda.get_device_name(device)
        peak = peak_tflops(device_name, args.peak_tflops)
        if peak is None:
            raise SystemExit(
                f"error: no bf16 peak known for {device_name!r}; pass --peak-tflops "
                "(dense bf16 TFLOPS of one device)"
            )
        peak_flops = peak * 1e12
    else:
        device = torch.device("cpu")
        device_name = platform.processor() or platform.machine()
        peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else None

    import deepspeed

    from schemas.jobs import TrainJobConfig
    from schemas.precision import resolve_precision
    from schemas.scaling import ScalingConfig
    from schemas.training import DeepSpeedConfig, ModelConfig, OptimConfig, TrainerConfig
    from trainer.engine import build_engine
    from trainer.metrics import flops_per_token, measure_matmul_flops, mfu
    from trainer.model import count_parameters
    from trainer.step import train_step

    arch = LLAMA_SMOKE if args.cpu_smoke else MODELS[args.model]
    total_steps = args.warmup + args.steps
    fused = optimizer_choice(args, on_gpu) == "fused"
    cfg = TrainJobConfig(
        seed=1234,
        model=ModelConfig(**arch, attn_implementation="sdpa"),
        deepspeed=DeepSpeedConfig(stage=args.zero),
        scaling=ScalingConfig(
            num_workers=world,
            use_gpu=on_gpu,
            gpus_per_node=torch.cuda.device_count() if on_gpu else 0,
            peak_flops_per_device=peak_flops,
        ),
        optim=OptimConfig(lr=3e-4, warmup_steps=min(10, total_steps), fused=fused),
        trainer=TrainerConfig(
            max_steps=total_steps,
            micro_batch_size=args.micro_batch,
            grad_accum_steps=args.grad_accum,
            seq_len=args.seq_len,
            precision="fp32" if args.cpu_smoke else "auto",
            gradient_checkpointing=args.grad_ckpt,
        ),
    )
    precision = resolve_precision(cfg.trainer.precision)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    engine, ds_config = build_engine(cfg, RandomTokenizer(args.vocab), world, on_gpu)
    build_s = time.perf_counter() - started
    # What DeepSpeed really built (ZeRO wraps the basic optimizer in .optimizer).
    optimizer_class = type(getattr(engine.optimizer, "optimizer", engine.optimizer)).__name__
    num_params = count_parameters(engine.module)
    embedding_params = engine.module.get_input_embeddings().weight
    embedding_params = getattr(embedding_params, "ds_numel", embedding_params.numel())
    fpt = flops_per_token(num_params, cfg.model.num_layers, cfg.model.hidden_size, args.seq_len)
    # The input embedding is a lookup, not a matmul: the stricter count leaves it out.
    fpt_strict = flops_per_token(
        num_params - embedding_params, cfg.model.num_layers, cfg.model.hidden_size, args.seq_len
    )
    if peak_flops is None:  # CPU: the matmul rate of this process, as the trainer does
        peak_flops = measure_matmul_flops(device, torch.float32)

    batches = random_batches(args.vocab, args.micro_batch, args.seq_len, device, cfg.seed + rank)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    engine.train()
    losses = []
    for _ in range(args.warmup):
        losses.append(train_step(engine, batches, args.grad_accum, device))
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    sync()
    step_s: list[float] = []
    if on_gpu:  # per-step times from CUDA events: no host sync between steps
        events = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps + 1)]
        t0 = time.perf_counter()
        events[0].record()
        for i in range(args.steps):
            losses.append(train_step(engine, batches, args.grad_accum, device))
            events[i + 1].record()
        sync()
        elapsed = time.perf_counter() - t0
        step_s = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(args.steps)]
    else:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            t = time.perf_counter()
            losses.append(train_step(engine, batches, args.grad_accum, device))
            step_s.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0

    # The slowest rank sets the pace; memory is reported for the fullest device.
    if on_gpu:
        peak_alloc = torch.cuda.max_memory_allocated(device)
        peak_reserved = torch.cuda.max_memory_reserved(device)
    else:
        import resource

        peak_alloc = peak_reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats = torch.tensor([elapsed, peak_alloc, peak_reserved], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    elapsed, peak_alloc, peak_reserved = stats.tolist()
    loss_values = [float(x) for x in losses]

    tokens_per_step = args.micro_batch * args.grad_accum * args.seq_len  # per device
    tps_device = tokens_per_step * args.steps / elapsed
    result = {
        "benchmark": "gpu-train" if on_gpu else "cpu-smoke",
        "timestamp": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.gpu", *sys.argv[1:]]),
        "device": device_name,
        "world_size": world,
        "model": "llama-smoke" if args.cpu_smoke else args.model,
        "parameters": num_params,
        "embedding_parameters": embedding_params,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum,
        "global_batch_tokens": tokens_per_step * world,
        "zero_stage": args.zero,
        "precision": precision,
        "attention": cfg.model.attn_implementation,
        "gradient_checkpointing": args.grad_ckpt,
        "optimizer": optimizer_class,
        "ds_optimizer": ds_config["optimizer"],
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "timed_s": elapsed,
        "step_s_median": statistics.median(step_s),
        "step_s_min": min(step_s),
        "tokens_per_s_per_device": tps_device,
        "tokens_per_s_total": tps_device * world,
        "flops_per_token": fpt,
        "peak_flops_per_device": peak_flops,
        "peak_flops_source": "spec sheet (bf16 dense)" if on_gpu else "measured fp32 matmul",
        "mfu": mfu(tps_device * world, fpt, peak_flops, world),
        "mfu_excluding_embedding": mfu(tps_device * world, fpt_strict, peak_flops, world),
        "peak_memory_allocated_gib": peak_alloc / 2**30,
        "peak_memory_reserved_gib": peak_reserved / 2**30,
        "memory_kind": "device" if on_gpu else "host RSS",
        "loss_first": loss_values[0],
        "loss_last": loss_values[-1],
        "engine_build_s": build_s,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "deepspeed": deepspeed.__version__,
            "transformers": __import__("transformers").__version__,
        },
        "ds_zero_config": ds_config["zero_optimization"],
    }
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    result["ray_imported"] = "ray" in sys.modules
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"gpu-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result["json"] = str(out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    sys.stderr.flush()
    print("\n" + table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
