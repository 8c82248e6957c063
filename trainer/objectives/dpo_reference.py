"""The DPO reference model's log-probabilities, without a second model in memory.

With LoRA the reference is the policy itself with its adapter switched off. For full
fine-tuning the starting model scores every pair once, before the first step (and before a
checkpoint is loaded, so a resumed run scores with the same starting weights): each rank an
equal share of the rows through its own engine, so it works under ZeRO-3 too, then every rank
gathers the whole table. Rank 0 keeps it beside the prepared data in its store (a path, or
the object store the preparation is in, so a rank 0 on any node finds it), keyed by the
starting model, so a resumed or repeated run reads it instead of scoring again. Rank 0 alone
decides whether it is there and hands the table to the others: nodes that share no
filesystem must still all score, or all not, for their collectives to match.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist

from console import log
from rundir.store import Location, open_location
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


def table_location(dataset_dir: str, model_key: dict) -> Location:
    """Where the table of a prepared dataset (a path or URI) and starting model lives."""
    digest = hashlib.sha256(json.dumps(model_key, sort_keys=True).encode()).hexdigest()
    return open_location(dataset_dir).parent.child(f"reference-logps-{digest[:16]}.pt")


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
    engine, dataset_dir: str, kept_in: str, key: dict, micro: int, rank: int, world: int, device
) -> Reference:
    """The table of the rows in ``dataset_dir`` (this node's copy), kept beside the
    preparation ``kept_in`` names (its dataset directory, a path or URI)."""
    where = table_location(kept_in, key)
    table = _read_table(where) if rank == 0 else None
    if dist.is_initialized():
        shared = [table]
        dist.broadcast_object_list(shared, src=0)
        table = shared[0]
    if table is not None:
        if rank == 0:
            log.info(f"DPO reference: log-probabilities read from {where}")
    else:
        was_training = engine.training
        engine.eval()
        table = {
            s: _score_split(engine, dataset_dir, s, micro, rank, world, device) for s in SPLITS
        }
        if was_training:
            engine.train()
        if rank == 0:
            _write_table(where, table)
            rows = sum(len(t) for t in table.values())
            log.info(f"DPO reference: {rows} pairs scored by the starting model -> {where}")
    return table_reference(table, device)


def _read_table(where: Location) -> dict[str, torch.Tensor] | None:
    if not where.is_file():
        return None
    return torch.load(io.BytesIO(where.read_bytes()), weights_only=True)


def _write_table(where: Location, table: dict[str, torch.Tensor]) -> None:
    """Whole or absent: a crash never leaves half a table (a local file is renamed into
    place; an object store's upload appears only once complete)."""
    blob = io.BytesIO()
    torch.save(table, blob)
    if where.fs.type_name != "local":
        where.write_bytes(blob.getvalue())
        return
    path = Path(where.path)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_bytes(blob.getvalue())
    tmp.rename(path)
