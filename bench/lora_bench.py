"""Multi-LoRA serving benchmark: one replica's engine (Generator + Scheduler, the code a Serve
replica runs, without HTTP) decoding 32 concurrent greedy streams spread over 4 adapters and
the base, against the same streams all on the base with no adapter loaded; and the memory of
one replica holding the base and 4 adapters against 4 merged exports served as 4
deployments (one replica process each).

    python -m bench.lora_bench [--export DIR] [--concurrency 32] [--requests 96]

The adapters are rank-16 LoRA on peft's GPT-2 default target (c_attn) with B drawn at random
(peft's init_lora_weights=False): the work per token is that of trained adapters. Memory is
each process's resident set after loading, measured in fresh subprocesses (the replica with
its adapters; one merged export, counted 4 times).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADAPTERS = 4
RANK = 16
PROMPTS = ["The", "Return the", "This module", "A list of", "If the", "In Python,"]


def make_adapters(export: str, out: Path, count: int = ADAPTERS) -> dict[str, str]:
    """``count`` adapters with random (non-zero) B matrices, in peft's layout."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = {}
    for i in range(count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(export)
        config = LoraConfig(
            r=RANK, lora_alpha=2 * RANK, fan_in_fan_out=True, init_lora_weights=False
        )
        get_peft_model(model, config).save_pretrained(out / f"lora{i}")
        paths[f"lora{i}"] = str(out / f"lora{i}")
    return paths


def merged_export(export: str, adapter: str, out: Path) -> str:
    """What a user serves today: the adapter merged into a full copy of the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(export), adapter)
    model.merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(export).save_pretrained(out)
    return str(out)


def throughput(
    export: str, adapters: dict[str, str], concurrency: int, requests: int, max_tokens: int
) -> float:
    """Completion tokens/s of ``requests`` greedy streams, ``concurrency`` at a time, spread
    round-robin over the base and ``adapters`` (none: all on the base, no peft at all)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _throughput(export, adapters, concurrency, requests, max_tokens)
    finally:
        torch.set_num_threads(threads)


def _throughput(
    export: str, adapters: dict[str, str], concurrency: int, requests: int, max_tokens: int
) -> float:
    from schemas.serving import LoraServeConfig
    from serve.adapters import Adapters
    from serve.generator import Generator
    from serve.sampling import SamplingParams
    from serve.scheduler import Scheduler

    gen = Generator(export, device="cpu")
    lora = LoraServeConfig(adapters=adapters, max_loras=max(1, len(adapters)))
    held = Adapters(gen, lora, gen.model_name)
    scheduler = Scheduler(gen, max_batch_size=concurrency, max_loras=lora.max_loras)
    held.in_use = scheduler.adapters_in_use
    models = [None, *adapters]
    prompts = [gen.encode(p) for p in PROMPTS]

    async def one(i: int, gate: asyncio.Semaphore) -> int:
        async with gate:
            count = 0
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
            prompt = prompts[i % len(prompts)]
            async for delta in scheduler.generate(prompt, params, models[i % len(models)]):
                count = delta.token_count
            return count

    async def run() -> tuple[int, float]:
        await asyncio.gather(*(one(i, asyncio.Semaphore(4)) for i in range(4)))  # warm-up
        gate = asyncio.Semaphore(concurrency)
        started = time.perf_counter()
        tokens = await asyncio.gather(*(one(i, gate) for i in range(requests)))
        return sum(tokens), time.perf_counter() - started

    tokens, wall_s = asyncio.run(run())
    return tokens / wall_s


RSS_SCRIPT = """
import json, sys, psutil, torch
from schemas.serving import LoraServeConfig
from serve.adapters import Adapters
from serve.generator import Generator
gen = Generator(sys.argv[1], device="cpu")
Adapters(gen, LoraServeConfig(adapters=json.loads(sys.argv[2])), gen.model_name)
params = sum(p.numel() * p.element_size() for p in gen.model.parameters())
print(json.dumps({"rss": psutil.Process().memory_info().rss, "params": params}))
"""


def replica_memory(export: str, adapters: dict[str, str]) -> dict:
    """Resident bytes and parameter bytes of a fresh process that loads what a replica does."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, export, json.dumps(adapters)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(export: str, concurrency: int = 32, requests: int = 96, max_tokens: int = 32) -> dict:
    work = Path(tempfile.mkdtemp(prefix="zeroray-lora-bench-"))
    adapters = make_adapters(export, work)
    mixed = throughput(export, adapters, concurrency, requests, max_tokens)
    base = throughput(export, {}, concurrency, requests, max_tokens)
    one_replica = replica_memory(export, adapters)
    merged = merged_export(export, adapters["lora0"], work / "merged0")
    per_merged = replica_memory(merged, {})
    return {
        "concurrency": concurrency,
        "requests": requests,
        "max_tokens": max_tokens,
        "adapters": len(adapters),
        "rank": RANK,
        "mixed_tokens_per_s": mixed,
        "base_alone_tokens_per_s": base,
        "ratio": mixed / base,
        "one_replica_rss_bytes": one_replica["rss"],
        "one_replica_param_bytes": one_replica["params"],
        "merged_deployments_rss_bytes": ADAPTERS * per_merged["rss"],
        "merged_deployments_param_bytes": ADAPTERS * per_merged["params"],
    }


def rows(result: dict) -> list[tuple]:
    """(measurement, value, baseline, goal) rows for `make bench`'s table."""
    mib = 2**20
    c, n = result["concurrency"], result["adapters"]
    return [
        (
            f"serving LoRA: {n} adapters + base mixed / base alone, c={c}, tokens/s",
            result["mixed_tokens_per_s"],
            result["base_alone_tokens_per_s"],
            "goal >= 0.7",
        ),
        (
            f"serving LoRA: 1 replica (base + {n} adapters) / {n} merged deployments, RSS MiB",
            result["one_replica_rss_bytes"] / mib,
            result["merged_deployments_rss_bytes"] / mib,
            "",
        ),
        (
            f"serving LoRA: 1 replica (base + {n} adapters) / {n} merged deployments, weights MiB",
            result["one_replica_param_bytes"] / mib,
            result["merged_deployments_param_bytes"] / mib,
            "",
        ),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.lora_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--export", help="an export directory; default: the newest under runs/")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    export = args.export
    if export is None:
        from rundir import layout

        found = layout.newest_export(Path("runs").resolve())
        if found is None:
            parser.error("no export under runs/; run `make train` or pass --export DIR")
        export = str(found)
    result = compare(export, args.concurrency, args.requests, args.max_tokens)
    print(json.dumps(result, indent=2))
    for name, value, base, _ in rows(result):
        print(f"{name}: {value:,.1f} vs {base:,.1f} ({value / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
