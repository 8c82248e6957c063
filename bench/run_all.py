"""`make bench`: every benchmark in one process run, a table of figures and ratios, a JSON
under bench/results/ and the "Latest run" section of BENCHMARKS.md.

    python -m bench.run_all [--steps 60] [--quick] [--data-1gib] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from bench import data_bench, datatrove_bench, lora_bench, serve_bench, train_bench

MARK_BEGIN, MARK_END = "<!-- latest-run:begin -->", "<!-- latest-run:end -->"


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **{p: version(p) for p in ("torch", "ray", "deepspeed", "transformers", "datasets")},
    }


class Sections:
    """Wall seconds of each part of the run, for the table: where `make bench`'s time goes."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - started, 1)
        return result


def run(
    steps: int, quick: bool, data_1gib: bool = False, sweep: bool = False
) -> tuple[dict, list[tuple]]:
    import ray

    work = Path(tempfile.mkdtemp(prefix="zeroray-bench-"))
    cache, out = str(work / "cache"), str(work / "runs")
    timed = Sections()
    # First, before this process starts Ray: each side starts as its users start it.
    headline_steps = 100 if quick else train_bench.PEER_STEPS
    results: dict = {
        "headline": timed("headline", train_bench.headline, cache, str(work), headline_steps)
    }
    results["data"] = timed("data_stage", train_bench.data_prep, cache, 1 if quick else 3)
    # The whole preparation at two corpus sizes, each as `python -m cluster.prepare` runs it:
    # 10x apart; 100 MiB and 1 GiB only behind --data-1gib (the 1 GiB rows alone took over
    # 20 minutes of a full run).
    sizes = [5, 50] if quick else ([100, 1024] if data_1gib else [10, 100])
    measured: dict = {}  # each size's run, which the datatrove comparison reuses
    results["data_sizes"] = timed(
        "data_sizes", data_bench.compare, sizes, work / "data-bench", measured
    )
    # zeroray's preparation against datatrove's, one after the other on one corpus.
    peer_sizes = [5] if quick else [100] + ([1024] if data_1gib else [])
    results["datatrove"] = [
        timed(f"datatrove_{s}mib", datatrove_bench.compare, s, work / "datatrove", measured.get(s))
        for s in peer_sizes
    ]
    results["bare"] = timed(
        "bare_loop", train_bench.bare_loop, cache, max(5, steps // 3), 1 if quick else 3
    )
    stacks = {"zero2_2w": ["deepspeed=zero2"]}
    if sweep:  # four more training runs, behind --sweep
        stacks |= {
            "zero0_2w": ["deepspeed=zero0"],
            "zero1_2w": ["deepspeed=zero1"],
            "zero3_2w": ["deepspeed=zero3"],
            "zero2_1w": [
                "deepspeed=zero2",
                "scaling.num_workers=1",
                "scaling.cpus_per_worker=2",
                "trainer.micro_batch_size=16",
            ],
        }
    for name, extra in stacks.items():
        results[name] = timed(name, train_bench.full_stack, cache, out, name, steps, extra)
    ray.shutdown()  # the serving benchmark starts its own cluster
    export = str(Path(out) / "bench" / "zero2_2w" / "export")  # the same run's export
    results["serve"] = timed("serve", serve_bench.compare, export, [1, 8, 32], [32, 96], 1)
    results["lora"] = timed("lora", lora_bench.compare, export, requests=32 if quick else 96)
    results["section_seconds"] = timed.seconds

    bare, z2 = results["bare"], results["zero2_2w"]
    ours, hf, ddp = (results["headline"][k] for k in ("zeroray", "hf_deepspeed", "ddp"))
    vs_hf = f"zeroray / HF Trainer + DeepSpeed ZeRO-2 (torchrun), {headline_steps} steps"
    rows = [
        (
            f"training: {vs_hf}, median tokens/s",
            ours["tokens_per_s"],
            hf["tokens_per_s"],
            "goal >= 1.0",
        ),
        (
            f"training: {vs_hf}, seconds to the first step",
            ours["first_step_s"],
            hf["first_step_s"],
            "goal <= 2",
        ),
        (f"training: {vs_hf}, total wall time (s)", ours["wall_s"], hf["wall_s"], "goal <= 1.3"),
        (
            "training: zeroray / plain DDP (torchrun), median tokens/s",
            ours["tokens_per_s"],
            ddp["tokens_per_s"],
            "",
        ),
        (
            "training: full stack (ZeRO-2, 2x1 thread) / bare loop (2 threads), tokens/s",
            z2["tokens_per_s"],
            bare["tokens_per_s"],
            "goal >= 0.9",
        ),
        ("training: MFU full stack / bare loop", z2["mfu"], bare["mfu"], "goal >= 0.9"),
        (
            "data prep: tokenize + pack stage / raw tokenizers encode_batch, tokens/s",
            results["data"]["pipeline_tokens_per_s"],
            results["data"]["raw_tokens_per_s"],
            "goal >= 0.8",
        ),
    ]
    if "zero2_1w" in results:
        rows.append(
            (
                "training: 2 workers / 1 worker (2 threads), tokens/s",
                z2["tokens_per_s"],
                results["zero2_1w"]["tokens_per_s"],
                "",
            )
        )
        for stage in ("zero0", "zero1", "zero3"):
            rows.append(
                (
                    f"training: ZeRO-{stage[-1]} / ZeRO-2 (2 workers), tokens/s",
                    results[f"{stage}_2w"]["tokens_per_s"],
                    z2["tokens_per_s"],
                    "",
                )
            )
    rows += data_bench.rows(results["data_sizes"])
    for peer in results["datatrove"]:
        rows += datatrove_bench.rows(peer)
    rows += serve_rows(results["serve"])
    rows += lora_bench.rows(results["lora"])
    startup = z2.get("startup_s", {})
    if startup:
        rows.append(
            (
                "start-up: seconds to the first step (data cache hit)",
                startup["total"],
                30.0,
                "goal < 30 s",
            )
        )
    return results, rows


def serve_rows(serve: dict) -> list[tuple]:
    """zeroray where users call it (the port, through its ingress) against `transformers
    serve --continuous-batching`, and against its own replica's URL (the ceiling); then
    sequential generate."""
    ours, peer, seq = serve["zeroray"], serve["peer"], serve["baseline"]
    port = f"zeroray port ({serve['ingress']})"
    vs = (f"{port} / transformers serve --continuous-batching", f"{port} / the replica's own URL")
    rows = []
    for load in serve["loads"]:
        key = load["key"]
        rows += _load_rows(load, ours["port"][key], ours["replica"][key], peer["cases"][key], vs)
    rows.append(
        (
            "serving: zeroray / transformers serve --continuous-batching, peak memory (MiB)",
            ours["peak_rss_mib"],
            peer["peak_rss_mib"],
            "",
        )
    )
    top = max(load["concurrency"] for load in serve["loads"])
    for tokens, base in seq.items():
        key = f"whole-{tokens}-c{top}"
        if key in ours["port"]:
            label = f"serving: zeroray port, whole, {tokens} tokens, c={top} / sequential generate"
            rows.append(
                (
                    f"{label}, tokens/s",
                    ours["port"][key]["tokens_per_s"],
                    base["tokens_per_s"],
                    "goal >= 8",
                )
            )
    return rows


def _load_rows(load: dict, port: dict, replica: dict, peer: dict, vs: tuple) -> list[tuple]:
    c = load["concurrency"]
    what = f"{'streamed' if load['stream'] else 'whole'}, {load['max_tokens']} tokens, c={c}"
    wanted = [(vs[0], peer, "tokens_per_s", "tokens/s", "goal >= 1.0" if c == 32 else "")]
    if c == 1:
        wanted.append((vs[0], peer, "p50_s", "p50 latency (s)", "goal <= 1.05"))
    if c == 32:
        wanted.append((vs[1], replica, "tokens_per_s", "tokens/s", ""))
    if c == 32 and load["stream"]:
        wanted.append((vs[0], peer, "ttft_p50_s", "time to first token p50 (s)", ""))
    return [
        (f"serving: {against}, {what}, {label}", port[metric], theirs[metric], goal)
        for against, theirs, metric, label, goal in wanted
    ]


def render(rows: list[tuple], info: dict, results: dict, command: str) -> str:
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"torch {info['torch']}, ray {info['ray']}, deepspeed {info['deepspeed']}, "
        f"transformers {info['transformers']}, datasets {info['datasets']}.",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M')}).",
        "",
        "| measurement | value | baseline | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for label, value, base, goal in rows:
        ratio = f"{value / base:.2f}" if base else "n/a"  # 0 false removals on a side
        lines.append(f"| {label} | {value:,.3g} | {base:,.3g} | {ratio} | {goal} |")
    startup = results["zero2_2w"].get("startup_s")
    if startup:
        lines += [
            "",
            "Start-up breakdown (s): " + ", ".join(f"{k} {v}" for k, v in startup.items()),
        ]
    sections = results.get("section_seconds", {})
    if sections:
        total = sum(sections.values())
        lines += [
            "",
            f"Where the run's {total / 60:.1f} min went (s): "
            + ", ".join(f"{k} {v}" for k, v in sections.items()),
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per full-stack run")
    parser.add_argument("--quick", action="store_true", help="one repetition, ZeRO-2 only")
    parser.add_argument(
        "--data-1gib",
        action="store_true",
        help="1 GiB corpora: the size rows at 100 MiB and 1 GiB, and zeroray against datatrove "
        "at 1 GiB too (BENCHMARKS.md has their run time)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="ZeRO stages 0, 1 and 3 and one worker beside the ZeRO-2 run (four more "
        "training runs; BENCHMARKS.md has their run time)",
    )
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--markdown", default="BENCHMARKS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    results, rows = run(args.steps, args.quick, args.data_1gib, args.sweep)
    info = machine()
    options = (("--quick", args.quick), ("--data-1gib", args.data_1gib), ("--sweep", args.sweep))
    flags = " ".join(f for f, on in options if on)
    command = "make bench" + (f' ARGS="{flags}"' if flags else "")
    table = render(rows, info, results, command)
    print("\n" + table + f"\n\n(total {time.perf_counter() - started:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"machine": info, "results": results, "rows": [list(r) for r in rows]},
            indent=2,
            default=str,
        )
    )
    md = Path(args.markdown)
    if md.exists() and MARK_BEGIN in md.read_text():
        text = md.read_text()
        head, rest = text.split(MARK_BEGIN, 1)
        tail = rest.split(MARK_END, 1)[1]
        md.write_text(f"{head}{MARK_BEGIN}\n{table}\n{MARK_END}{tail}")
    print(f"results: {path}; {md} updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
