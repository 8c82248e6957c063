"""The training stacks zeroray is compared with, run as their users run them: `torchrun`,
2 processes, 1 thread each, on zeroray's default model, prepared data, global batch and
optimizer settings (fp32, ZeRO-2 where DeepSpeed is used):

- ``hf``: `transformers.Trainer` with ``deepspeed=`` (the engine under LLaMA-Factory and
  axolotl); on CPUs it needs ``use_cpu=True``, or every rank sees a world of 1;
- ``ddp``: a plain PyTorch DistributedDataParallel loop.

Rank 0 writes the wall-clock time of every optimizer step to ``--out`` (JSON); the harness
(bench/train_bench.py) turns those into tokens/s and seconds to the first step.

    torchrun --nproc_per_node 2 -m bench.peers hf --data DIR --tokenizer DIR --steps 300 --out F
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from schemas.training import ModelConfig, OptimConfig, TrainerConfig


def build(tokenizer_dir: str):
    from transformers import AutoTokenizer

    from trainer.model import build_model

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(1234)
    return build_model(ModelConfig(), tokenizer, {}, torch.float32)


def run_hf(args, step_times: list[float]) -> None:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    optim, loop = OptimConfig(), TrainerConfig()

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_times.append(time.time())

    def collate(rows: list[dict]) -> dict:
        ids = torch.tensor([r["input_ids"] for r in rows])
        return {"input_ids": ids, "labels": ids}

    ds_config = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": 2},
        # The same optimizer implementation zeroray's CPU runs use (torch's AdamW).
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": "auto",
                "betas": "auto",
                "eps": "auto",
                "weight_decay": "auto",
                "torch_adam": True,
            },
        },
    }
    targs = TrainingArguments(
        output_dir=args.workdir,
        use_cpu=True,
        deepspeed=ds_config,
        per_device_train_batch_size=loop.micro_batch_size,
        gradient_accumulation_steps=loop.grad_accum_steps,
        max_steps=args.steps,
        learning_rate=optim.lr,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.beta1,
        adam_beta2=optim.beta2,
        adam_epsilon=optim.eps,
        max_grad_norm=optim.grad_clip,
        warmup_steps=optim.warmup_steps,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": optim.min_lr_ratio},
        logging_steps=loop.log_every_steps,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=1234,
        dataloader_num_workers=0,
    )
    from trainer.loader import load_split  # the same prepared shards zeroray trains on

    train = load_split(args.data, "train").with_format(None)
    trainer = Trainer(
        model=build(args.tokenizer),
        args=targs,
        train_dataset=train,
        data_collator=collate,
        callbacks=[StepClock()],
    )
    trainer.train()
    trainer.save_model(os.path.join(args.workdir, "export"))  # as zeroray exports at the end
    # Leave the gloo group together before the interpreter exits: left to teardown, a rank
    # whose peer had already gone aborted in C++ ("terminate called without an active
    # exception", SIGABRT) and failed a CI run after every step had been timed.
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_ddp(args, step_times: list[float]) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from trainer.loader import load_split

    optim, loop = OptimConfig(), TrainerConfig()
    dist.init_process_group("gloo")
    model = build(args.tokenizer)
    ddp = DistributedDataParallel(model)
    # One parameter group: where weight decay applies does not change the speed measured.
    opt = torch.optim.AdamW(
        model.parameters(),
        weight_decay=optim.weight_decay,
        lr=optim.lr,
        betas=(optim.beta1, optim.beta2),
        eps=optim.eps,
    )
    warmup = optim.warmup_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    train = load_split(args.data, "train")
    sampler = DistributedSampler(train, seed=1234, drop_last=True)
    loader = DataLoader(train, batch_size=loop.micro_batch_size, sampler=sampler, drop_last=True)
    step, epoch = 0, 0
    while step < args.steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            ids = batch["input_ids"]
            ddp(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            step_times.append(time.time())
            if step == args.steps:
                break
        epoch += 1
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("peer", choices=("hf", "ddp"))
    p.add_argument("--data", required=True, help="a prepared dataset directory (train split)")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workdir", default="/tmp/zeroray-peer")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    step_times: list[float] = []
    (run_hf if args.peer == "hf" else run_ddp)(args, step_times)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(args.out, "w") as f:
            json.dump({"peer": args.peer, "step_times": step_times}, f)


if __name__ == "__main__":
    main()
