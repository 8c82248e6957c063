"""Run under `torchrun --nproc_per_node 2`: builds a real DeepSpeed engine per ZeRO stage
(fp32, gloo), takes one step and one more backward, and prints (rank 0) the bytes of
weights, gradients and optimizer state each rank's engine holds, summed from its tensors.

    torchrun --nproc_per_node 2 tests/helpers/engine_state_bytes.py TOKENIZER_DIR
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from schemas.data import TokenizerConfig
from schemas.jobs import TrainJobConfig
from schemas.training import DeepSpeedConfig, ModelConfig, TrainerConfig
from trainer.engine import build_engine


def nbytes(tensors) -> int:
    """Bytes of the distinct tensors (aliases counted once). The elements of each, not the
    buffer it may be a view of: DeepSpeed's reduction buckets are buffers, not state."""
    seen = {}
    for t in tensors:
        if t is not None and t.numel():
            seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def held_bytes(engine, stage: int) -> dict:
    opt = engine.optimizer
    params = list(engine.module.parameters())
    moments = (
        [t for s in opt.optimizer.state.values() for t in s.values() if t.dim()]
        if stage
        else [t for s in opt.state.values() for t in s.values() if t.dim()]
    )
    if stage == 0:
        return {
            "parameters": nbytes(p.data for p in params),
            "gradients": nbytes(p.grad for p in params),
            "optimizer": nbytes(moments),
        }
    if stage <= 2:
        return {
            "parameters": nbytes(p.data for p in params),
            "gradients": nbytes(g for gs in opt.averaged_gradients.values() for g in gs),
            "optimizer": nbytes([*opt.single_partition_of_fp32_groups, *moments]),
        }
    return {  # ZeRO-3: the partitions, plus the small tensors every rank keeps whole
        "parameters": nbytes([*(p.ds_tensor for p in params), *(p.data for p in params)]),
        "gradients": nbytes([opt.grad_partitions_flat_buffer]),
        "optimizer": nbytes([*opt.fp32_partitioned_groups_flat, *moments]),
    }


def main() -> None:
    tokenizer_dir = sys.argv[1]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    results = {}
    for stage in range(4):
        cfg = TrainJobConfig(
            model=ModelConfig(hidden_size=128, num_layers=2, num_heads=4),
            tokenizer=TokenizerConfig(kind="pretrained", name_or_path=tokenizer_dir),
            deepspeed=DeepSpeedConfig(stage=stage),
            trainer=TrainerConfig(micro_batch_size=2, seq_len=32, max_steps=4),
        )
        engine, _ = build_engine(cfg, tokenizer, world_size=2, on_gpu=False)
        ids = torch.randint(0, len(tokenizer), (2, 32))
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()  # the optimizer state exists from the first step on
        engine.backward(engine(input_ids=ids, labels=ids).loss)  # gradients held
        results[stage] = held_bytes(engine, stage)
        engine.destroy()
    gathered = [None, None]
    dist.all_gather_object(gathered, results)
    if dist.get_rank() == 0:
        print("ENGINE_BYTES " + json.dumps(gathered))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
