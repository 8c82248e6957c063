"""Run under `torchrun --nproc_per_node W`: three optimizer steps of a tiny GPT-2 (DeepSpeed
ZeRO-2, fp32, gloo) on fixed fine-tuning rows whose loss masks are ragged, with the global
batch of 4 rows split into W ranks x ACCUM micro-batches of MICRO rows. Rank 0 saves the
final weights: the split must not change them. Several splits of one W train one after the
other in the same processes, each from the same initial weights (one start-up for all).

    torchrun --nproc_per_node W tests/helpers/split_training.py TOKENIZER_DIR \
        ACCUM MICRO OUT [ACCUM MICRO OUT ...]
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from schemas.jobs import TrainJobConfig
from schemas.training import DeepSpeedConfig, ModelConfig, OptimConfig, TrainerConfig
from trainer.engine import build_engine
from trainer.step import train_step

GLOBAL_ROWS, SEQ, STEPS = 4, 16, 3


def ragged_rows(vocab: int) -> list[dict]:
    """Rows whose first k tokens are prompt (-100), k from 0 to 13: 2 to 15 targets each."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(GLOBAL_ROWS * STEPS):
        ids = torch.randint(0, vocab, (SEQ,), generator=gen)
        labels = ids.clone()
        labels[: (i * 5) % 14] = -100
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def train_split(tokenizer, rank: int, world: int, accum: int, micro: int, out: str) -> None:
    assert world * accum * micro == GLOBAL_ROWS
    torch.manual_seed(0)
    cfg = TrainJobConfig(
        model=ModelConfig(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=16),
        deepspeed=DeepSpeedConfig(stage=2),
        optim=OptimConfig(warmup_steps=1),
        trainer=TrainerConfig(
            micro_batch_size=micro, grad_accum_steps=accum, seq_len=SEQ, max_steps=STEPS
        ),
    )
    engine, _ = build_engine(cfg, tokenizer, world_size=world, on_gpu=False)
    rows = ragged_rows(len(tokenizer))

    def my_micro_batches():
        for step in range(STEPS):
            batch_rows = rows[step * GLOBAL_ROWS : (step + 1) * GLOBAL_ROWS]
            for j in range(accum):  # micro-batch j of rank r: a contiguous slice
                start = (j * world + rank) * micro
                chunk = batch_rows[start : start + micro]
                yield {k: torch.stack([r[k] for r in chunk]) for k in chunk[0]}

    batches = my_micro_batches()
    for _ in range(STEPS):
        train_step(engine, batches, accum, torch.device("cpu"))
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in engine.module.state_dict().items()}, out)
    dist.barrier()


def main() -> None:
    tokenizer_dir, splits = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    for i in range(0, len(splits), 3):
        accum, micro, out = int(splits[i]), int(splits[i + 1]), splits[i + 2]
        train_split(tokenizer, rank, world, accum, micro, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
