"""Training and data-preparation benchmarks, each side by side with its baseline.

- the full stack (Ray Train + DeepSpeed, 2 workers x 1 thread) against a bare single-process
  PyTorch loop (2 threads) on the same model, global batch and data;
- 1 worker against 2 workers, ZeRO 0/1/2/3 against each other, MFU against the measured
  matmul rate;
- the preparation pipeline's tokenize + pack against a raw `tokenizers` batch encode;
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


def prepared(cache_dir: str, base: list[str] = MODEL):
    from dataprep.pretrain_data import prepare_data

    cfg = _cfg(base)
    return prepare_data(cfg.data, cfg.tokenizer, cfg.trainer.seq_len, cache_dir)


def bare_loop(
    cache_dir: str, steps: int, repeats: int, threads: int = 2, base: list[str] = MODEL
) -> dict:
    """One process, plain torch AdamW, the same model, batch (2 x 8 x 128) and data."""
    from dataprep.tokenizer import load_pretrained_tokenizer
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
    from trainer.metrics import read_metrics

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
    """tokenize_and_pack (datasets.map, batched) against tokenizers' own encode_batch."""
    import datasets

    from dataprep.cleaning import clean_documents
    from dataprep.corpus import load_documents
    from dataprep.packing import tokenize_and_pack
    from dataprep.tokenizer import load_pretrained_tokenizer

    cfg = _cfg(base)
    tokenizer = load_pretrained_tokenizer(prepared(cache_dir, base).tokenizer_dir)
    from collections import Counter

    texts = [
        d.text for d in clean_documents(load_documents(cfg.data), cfg.data.min_chars, Counter())
    ]
    raw, ours = [], []
    datasets.disable_caching()  # a cache hit would measure nothing
    datasets.disable_progress_bars()
    for _ in range(repeats):
        started = time.perf_counter()
        n = sum(
            len(e.ids)
            for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        )
        raw.append(n / (time.perf_counter() - started))
        started = time.perf_counter()
        packed = tokenize_and_pack(
            datasets.Dataset.from_dict({"text": texts}), tokenizer, cfg.trainer.seq_len
        )
        ours.append(len(packed) * cfg.trainer.seq_len / (time.perf_counter() - started))
    datasets.enable_progress_bars()
    return {
        "raw_tokens_per_s": statistics.median(raw),
        "pipeline_tokens_per_s": statistics.median(ours),
        "documents": len(texts),
    }
