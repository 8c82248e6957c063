"""Training and data-preparation benchmarks, each side by side with its baseline.

- the full stack (Ray Train + DeepSpeed, 2 workers x 1 thread) against a bare single-process
  PyTorch loop (2 threads) on the same model, global batch and data;
- 1 worker against 2 workers, ZeRO 0/1/2/3 against each other, MFU against the measured
  matmul rate;
- the preparation pipeline's tokenize + pack stage against a raw `tokenizers` batch encode
  (the whole pipeline at two corpus sizes: data_bench.py);
- start-up: seconds from the entry point to the first training step, by phase.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

MODEL = ["model.hidden_size=128", "model.num_layers=2", "trainer.seq_len=128"]


def _cfg(base: list[str]):
    from cluster.schema import load_config

    return load_config("train", base)


_PREPARED: dict = {}  # (cache_dir, overrides) -> PreparedData, for this process


def prepared(cache_dir: str, base: list[str] = MODEL):
    """The prepared data, made by `python -m cluster.prepare` as a user makes it: its Ray
    Data pipeline runs on a Ray of its own, so this process starts none; then a cache hit.
    Once per process for each cache and data: each bench side asks for it, and a command
    that only finds the cache took 7 s."""
    import subprocess
    import sys

    from dataprep.prepare import prepare_data

    key = (cache_dir, tuple(base))
    known = _PREPARED.get(key)
    if known is not None and Path(known.dataset_dir).is_dir():
        return known
    cfg = _cfg(base)
    command = [sys.executable, "-m", "cluster.prepare", *base, f"cache_dir={cache_dir}"]
    subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).parents[1])
    data = prepare_data(cfg.data, cfg.tokenizer, cfg.trainer.seq_len, cache_dir)
    assert data.cache_hit, data
    _PREPARED[key] = data
    return data


def bare_loop(
    cache_dir: str, steps: int, repeats: int, threads: int = 2, base: list[str] = MODEL
) -> dict:
    """One process, plain torch AdamW, the same model, batch (2 x 8 x 128) and data."""
    from dataprep.tokens.tokenizer import load_pretrained_tokenizer
    from trainer.engine import param_groups
    from trainer.loader import load_split
    from trainer.metrics import flops_per_token, measure_matmul_flops
    from trainer.model import build_model, count_parameters

    torch.set_num_threads(threads)
    data = prepared(cache_dir, base)
    cfg = _cfg(base)
    tokenizer = load_pretrained_tokenizer(data.tokenizer_dir)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tokenizer, {}, torch.float32)
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
    train = load_split(data.dataset_dir, "train")
    batch = 2 * cfg.trainer.micro_batch_size
    rates = []
    for r in range(repeats + 1):  # the first repetition warms up and is not counted
        started = time.perf_counter()
        for i in range(steps):
            start = (r * steps + i) * batch % (len(train) - batch)
            ids = train[start : start + batch]["input_ids"]
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if r:
            rates.append(steps * batch * cfg.trainer.seq_len / (time.perf_counter() - started))
    tps = statistics.median(rates)
    flops = flops_per_token(
        count_parameters(model), cfg.model.num_layers, cfg.model.hidden_size, cfg.trainer.seq_len
    )
    peak = measure_matmul_flops(torch.device("cpu"), torch.float32)
    return {"tokens_per_s": tps, "mfu": tps * flops / peak, "threads": threads}


def full_stack(
    cache_dir: str,
    output_dir: str,
    name: str,
    steps: int,
    extra: list[str],
    base: list[str] = MODEL,
) -> dict:
    """cluster.train.main as a user runs it; throughput from the logged windows (the first,
    which holds warm-up, is dropped)."""
    import json

    from cluster.train import main
    from rundir.metrics_file import read_metrics

    overrides = [
        *base,
        f"trainer.max_steps={steps}",
        "trainer.log_every_steps=10",
        "trainer.eval_every_steps=100000",
        "trainer.checkpoint_every_steps=100000",
        "trainer.eval_batches=2",
        "num_samples=0",
        "experiment=bench",
        f"run_name={name}",
        f"output_dir={output_dir}",
        f"cache_dir={cache_dir}",
        *extra,
    ]
    assert main(overrides) == 0
    run_dir = Path(output_dir) / "bench" / name
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_per_s" in r][1:]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "mfu": statistics.median(r["mfu"] for r in rows),
        "startup_s": summary.get("startup_s", {}),
    }


def data_prep(cache_dir: str, repeats: int = 3, base: list[str] = MODEL) -> dict:
    """The pipeline's tokenize + pack stage (dataprep/tokens/pack.py, one batch of up
    to PACK_BATCH_DOCS documents at a time, as Ray Data calls it) against tokenizers' own
    encode_batch, in this process on the same texts. The whole pipeline: data_bench.py."""
    import pyarrow as pa

    from dataprep.formatters.clean import clean_text
    from dataprep.readers.documents import iter_documents
    from dataprep.tokens.pack import PACK_BATCH_DOCS, tokenize_and_pack
    from dataprep.tokens.tokenizer import load_pretrained_tokenizer

    cfg = _cfg(base)
    data = prepared(cache_dir, base)
    tokenizer = load_pretrained_tokenizer(data.tokenizer_dir)
    texts = [t for d in iter_documents(cfg.data) if len(t := clean_text(d.text)) >= 64]
    raw, ours = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        n = sum(
            len(e.ids)
            for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        )
        raw.append(n / (time.perf_counter() - started))
        started = time.perf_counter()
        rows = 0
        for i in range(0, len(texts), PACK_BATCH_DOCS):
            batch = pa.table({"text": texts[i : i + PACK_BATCH_DOCS]})
            rows += tokenize_and_pack(batch, data.tokenizer_dir, cfg.trainer.seq_len).num_rows
        ours.append(rows * cfg.trainer.seq_len / (time.perf_counter() - started))
    return {
        "raw_tokens_per_s": statistics.median(raw),
        "pipeline_tokens_per_s": statistics.median(ours),
        "documents": len(texts),
    }


# ---- the headline: the full stack against the tools users compare it with ----------------

PEER_STEPS = 300
WINDOW_STEPS = 10  # tokens/s per window of 10 steps, as zeroray logs it
SKIP_STEPS = 30  # warm-up steps left out of the median (the measurement: 30-300)


def window_rates(step_times: list[float], tokens_per_step: int) -> list[float]:
    """tokens/s of each 10-step window after the first SKIP_STEPS; ``step_times[i]`` is the
    wall-clock time at the end of step i + 1."""
    return [
        WINDOW_STEPS * tokens_per_step / (step_times[end - 1] - step_times[end - 1 - WINDOW_STEPS])
        for end in range(SKIP_STEPS + WINDOW_STEPS, len(step_times) + 1, WINDOW_STEPS)
    ]


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    import os
    import subprocess
    import sys

    # No RAY_ADDRESS: zeroray's run starts a fresh local cluster, as `make train` does.
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "RAY_ADDRESS"}
    launched = time.time()
    proc = subprocess.run([sys.executable, *cmd], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{cmd[:2]} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return launched, time.time() - launched


def zeroray_run(
    cache_dir: str, output_dir: str, steps: int = PEER_STEPS, data: tuple[str, ...] = ()
) -> dict:
    """`python -m cluster.train` as a user runs it, on a fresh local Ray cluster."""
    from cluster.training.summary import worker_startup
    from rundir.metrics_file import read_metrics

    name = f"headline-{int(time.time())}"
    overrides = [
        *MODEL,
        *data,
        f"trainer.max_steps={steps}",
        f"trainer.log_every_steps={WINDOW_STEPS}",
        "trainer.eval_every_steps=100000",  # validation once, at the end
        "trainer.eval_at_start=false",
        "trainer.eval_batches=2",
        "trainer.checkpoint_every_steps=100000",  # a checkpoint at the end only
        "num_samples=0",
        "experiment=bench",
        f"run_name={name}",
        f"output_dir={output_dir}",
        f"cache_dir={cache_dir}",
    ]
    launched, wall_s = _timed(["-m", "cluster.train", *overrides])
    run_dir = Path(output_dir) / "bench" / name
    first_step = worker_startup(run_dir)["first_step"]
    rows = read_metrics(run_dir / "metrics.jsonl")
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > SKIP_STEPS]
    return {
        "tokens_per_s": statistics.median(rates),
        "first_step_s": first_step - launched,
        "wall_s": wall_s,
    }


def peer_run(
    peer: str, cache_dir: str, work_dir: str, steps: int = PEER_STEPS, data: tuple[str, ...] = ()
) -> dict:
    """bench/peers.py under torchrun (2 processes, 1 thread each) on the same prepared data."""
    import json

    prepared_data = prepared(cache_dir, [*MODEL, *data])
    cfg = _cfg(MODEL)
    out = Path(work_dir) / f"{peer}.json"
    cmd = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "bench.peers", peer]
    cmd += ["--data", prepared_data.dataset_dir, "--tokenizer", prepared_data.tokenizer_dir]
    cmd += ["--steps", str(steps), "--workdir", str(Path(work_dir) / peer), "--out", str(out)]
    launched, wall_s = _timed(cmd, {"OMP_NUM_THREADS": "1"})
    step_times = json.loads(out.read_text())["step_times"]
    tokens_per_step = 2 * cfg.trainer.micro_batch_size * cfg.trainer.seq_len
    return {
        "tokens_per_s": statistics.median(window_rates(step_times, tokens_per_step)),
        "first_step_s": step_times[0] - launched,
        "wall_s": wall_s,
    }


def headline(
    cache_dir: str, work_dir: str, steps: int = PEER_STEPS, data: tuple[str, ...] = ()
) -> dict:
    """zeroray, HF Trainer + DeepSpeed ZeRO-2 and plain DDP, one after the other, on the
    embedded corpus (``data``: overrides of it, e.g. fewer documents for a quick check)."""
    prepared(cache_dir, [*MODEL, *data])  # every side starts from the same prepared cache
    return {
        "zeroray": zeroray_run(cache_dir, str(Path(work_dir) / "runs"), steps, data),
        "hf_deepspeed": peer_run("hf", cache_dir, work_dir, steps, data),
        "ddp": peer_run("ddp", cache_dir, work_dir, steps, data),
    }


if __name__ == "__main__":  # python -m bench.train_bench [steps]: the headline alone
    import sys
    import tempfile

    work = tempfile.mkdtemp(prefix="zeroray-headline-")
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else PEER_STEPS
    result = headline(str(Path(work) / "cache"), work, steps)
    for name, r in result.items():
        print(
            f"{name:>14}: {r['tokens_per_s']:,.0f} tokens/s, first step {r['first_step_s']:.1f} s,"
            f" wall {r['wall_s']:.1f} s"
        )
