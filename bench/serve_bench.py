"""Serving benchmark: the Ray Serve endpoint against sequential `transformers.generate`.

    python -m bench.serve_bench [--export DIR] [--max-tokens 32] [--concurrency 1 8 32]

Both sides run on the same export, the same prompts and greedy decoding, on the same
machine in one run; only ratios are meant to be compared (these machines are noisy).
The baseline runs first, in this process, with as many torch threads as the replica gets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time
from pathlib import Path

PROMPTS = [
    "The",
    "Return the",
    "This module",
    "A list of",
    "If the",
    "In Python,",
    "The function",
    "An object",
]


def baseline(export: str, prompts: list[str], max_tokens: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    latencies, tokens = [], 0
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        latencies.append(time.perf_counter() - started)
        tokens += out.shape[1] - inputs["input_ids"].shape[1]
    return {
        "tokens_per_s": tokens / sum(latencies),
        "p50_s": statistics.median(latencies),
        "requests": len(prompts),
    }


async def _load(
    base: str, model: str, prompts: list[str], max_tokens: int, concurrency: int
) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(prompt: str) -> int:
        async with gate:
            started = time.perf_counter()
            out = await client.completions.create(
                model=model, prompt=prompt, max_tokens=max_tokens, temperature=0
            )
            latencies.append(time.perf_counter() - started)
            return out.usage.completion_tokens

    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(p) for p in prompts)))
    wall = time.perf_counter() - started
    await client.close()
    return {
        "tokens_per_s": tokens / wall,
        "p50_s": statistics.median(latencies),
        "requests": len(prompts),
    }


def serve_levels(
    export: str, levels: list[int], max_tokens: int, cpus: int, batch: int, rounds: int
) -> dict:
    import ray
    from ray import serve

    from schemas.serving import AutoscalingConfig, ServeConfig
    from serve.deployment import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=cpus, logging_level="ERROR", include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = ServeConfig(
        model_dir=export,
        num_cpus=cpus,
        max_batch_size=batch,
        max_ongoing_requests=max(levels) * 2,
        autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=1),
    )
    serve.run(build_app(args), name="bench", route_prefix="/")
    base, model = f"http://127.0.0.1:{port}/v1", Path(export).name
    results = {}
    try:
        asyncio.run(_load(base, model, PROMPTS[:2], max_tokens, 2))  # warm-up
        for c in levels:
            prompts = (PROMPTS * (rounds * c))[: max(8, rounds * c)]
            results[c] = asyncio.run(_load(base, model, prompts, max_tokens, c))
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def main() -> int:
    from cluster.run_dir import newest_export

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", default=None, help="export dir (default: newest in runs/)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--cpus", type=int, default=1, help="CPUs of the replica and threads of the baseline"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="requests per level = rounds x concurrency"
    )
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    export = args.export or (str(newest_export("runs") or ""))
    if not export:
        raise SystemExit(
            "error: --export not given and no export under runs/; run `make train` first"
        )

    base = baseline(export, PROMPTS, args.max_tokens, args.cpus)
    levels = serve_levels(
        export,
        args.concurrency,
        args.max_tokens,
        args.cpus,
        batch=max(args.concurrency),
        rounds=args.rounds,
    )
    print(f"\nexport {export}, {args.max_tokens} new tokens per request, greedy\n")
    print(f"{'setup':<28}{'tokens/s':>10}{'p50 latency':>13}{'tokens/s ratio':>16}")
    print(
        f"{'sequential generate':<28}{base['tokens_per_s']:>10.1f}{base['p50_s']:>12.3f}s"
        f"{1.0:>16.2f}"
    )
    for c, r in levels.items():
        print(
            f"{'serve, concurrency ' + str(c):<28}{r['tokens_per_s']:>10.1f}"
            f"{r['p50_s']:>12.3f}s{r['tokens_per_s'] / base['tokens_per_s']:>16.2f}"
        )
    c1 = levels.get(1)
    if c1:
        print(f"\np50 latency at concurrency 1 / baseline p50: {c1['p50_s'] / base['p50_s']:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"export": export, "max_tokens": args.max_tokens, "baseline": base, "serve": levels},
            indent=2,
        )
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
