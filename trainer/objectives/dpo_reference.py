"""The DPO reference model's log-probabilities, without a second model in memory.

With LoRA the reference is the policy itself with its adapter switched off. For full
fine-tuning the starting model scores every pair once, before the first step (and before a
checkpoint is loaded, so a resumed run scores with the same starting weights): each rank an
equal share of the rows through its own engine, so it works under ZeRO-3 too, then every rank
gathers the whole table. Rank 0 keeps it beside the prepared data, keyed by the starting
model, so a resumed or repeated run reads it instead of scoring again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist

from console import log
from trainer.loader import load_split
from trainer.objectives.dpo import Reference, pair_logps

SPLITS = ("train", "validation")


def adapter_disabled_reference(engine, device: torch.device) -> Reference:
    def reference(batch: dict, split: str):
        with torch.no_grad(), engine.module.disable_adapter():
            return pair_logps(engine.module, batch, device)

    return reference


def table_reference(table: dict[str, torch.Tensor], device: torch.device) -> Reference:
    def reference(batch: dict, split: str):
        rows = table[split][batch["index"]]  # (pairs, 2): chosen, rejected
        return rows[:, 0].to(device), rows[:, 1].to(device)

    return reference


def table_path(dataset_dir: str, model_key: dict) -> Path:
    """Where the table of a prepared dataset and starting model lives."""
    digest = hashlib.sha256(json.dumps(model_key, sort_keys=True).encode()).hexdigest()
    return Path(dataset_dir).parent / f"reference-logps-{digest[:16]}.pt"


def model_key(name_or_path: str, precision: str, stage: int, world: int, micro: int) -> dict:
    """What the scores depend on: the starting weights (their files), the precision, and how
    they were computed (ZeRO stage, batch shapes: floating-point sums differ in the last bits
    otherwise)."""
    path = Path(name_or_path)
    files = sorted(p for p in path.glob("*") if p.is_file()) if path.is_dir() else []
    weights = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return {
        "model": name_or_path,
        "weights": weights,
        "precision": precision,
        "zero_stage": stage,
        "shape": [world, micro],
    }


@torch.no_grad()
def _score_split(engine, dataset_dir: str, split: str, micro: int, rank: int, world: int, device):
    ds = load_split(dataset_dir, split)
    n = len(ds)
    per_rank = math.ceil(n / world)
    # Every rank runs the same number of forward passes (ZeRO-3 gathers weights collectively);
    # the rows past the end repeat row 0 and are marked -1 so nobody keeps their score.
    order = list(range(n)) + [-1] * (per_rank * world - n)
    mine = order[rank::world]
    scores = []
    for start in range(0, per_rank, micro):
        idx = mine[start : start + micro]
        batch = ds[[max(i, 0) for i in idx]]
        chosen, rejected = pair_logps(engine, batch, device)
        scores.append(
            torch.stack(
                [
                    torch.tensor(idx, dtype=torch.float64),
                    chosen.double().cpu(),
                    rejected.double().cpu(),
                ],
                1,
            )
        )
    mine_scores = torch.cat(scores)
    gathered = [None] * world
    if dist.is_initialized():
        dist.all_gather_object(gathered, mine_scores)
    else:
        gathered = [mine_scores]
    table = torch.zeros(n, 2, dtype=torch.float32)
    for part in gathered:
        keep = part[:, 0] >= 0
        table[part[keep, 0].long()] = part[keep, 1:].float()
    return table


def precomputed_reference(
    engine, dataset_dir: str, key: dict, micro: int, rank: int, world: int, device
) -> Reference:
    path = table_path(dataset_dir, key)
    if path.exists():
        table = torch.load(path, weights_only=True)
        if rank == 0:
            log.info(f"DPO reference: log-probabilities read from {path}")
    else:
        was_training = engine.training
        engine.eval()
        table = {
            s: _score_split(engine, dataset_dir, s, micro, rank, world, device) for s in SPLITS
        }
        if was_training:
            engine.train()
        if rank == 0:
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            torch.save(table, tmp)
            tmp.rename(path)  # whole or absent: a crash never leaves half a table
            rows = sum(len(t) for t in table.values())
            log.info(f"DPO reference: {rows} pairs scored by the starting model -> {path}")
    return table_reference(table, device)
