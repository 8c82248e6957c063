"""The resharding chains, one per ZeRO stage, each run trained on first use and kept for the
session (conftest.py `resume_chains`): an uninterrupted run on 2 workers; that run resumed
from its step 10 on 1 worker (2 -> 1); the 1-worker run resumed from its own step 15 on 2
workers (1 -> 2, test_resume_world_size.py). The 2-worker runs of both stages are also the
pretraining tests' ZeRO-3 run and its ZeRO-2 twin (test_pretrain.py)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from tiny_runs import TINY_DATA

# Global batch 16 either way: 2 workers x 4 x 2 accumulation, or 1 worker x 4 x 4.
CHAIN_RUN = [
    *TINY_DATA,
    "trainer.micro_batch_size=4",
    "trainer.max_steps=20",
    "trainer.log_every_steps=1",
    "trainer.eval_every_steps=20",
    "trainer.eval_batches=2",
    "trainer.checkpoint_every_steps=5",
    "trainer.keep_checkpoints=4",
    "optim.warmup_steps=5",
    "model.dropout=0.0",  # each rank draws its own dropout masks: not comparable across counts
    "num_samples=1",
    "experiment=ws",
]
WORKERS = {
    1: ["scaling.num_workers=1", "trainer.grad_accum_steps=4"],
    2: ["scaling.num_workers=2", "trainer.grad_accum_steps=2"],
}
# Where each worker count's checkpoint in a chain is taken, and the run it continues.
RESUME_AT = {2: 10, 1: 15}


class ResumeChains:
    """The chains' runs under ``output_dir``/ws, reading the session's prepared data."""

    def __init__(self, output_dir: Path, cache_dir: str):
        self.cache_dir = cache_dir
        self.overrides = [f"output_dir={output_dir}", f"cache_dir={cache_dir}"]
        self.runs = output_dir / "ws"
        self.output: dict[str, str] = {}  # each run's driver output, by run name

    def train(self, run_name: str, *extra: str) -> Path:
        from cluster.train import main

        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main([*CHAIN_RUN, *self.overrides, f"run_name={run_name}", *extra])
        self.output[run_name] = out.getvalue()
        assert code == 0, self.output[run_name][-3000:]
        return self.runs / run_name

    def written_by(self, stage: str, workers: int) -> Path:
        """The chain's run written by ``workers`` workers (trained on first use): 2 -> the
        uninterrupted run; 1 -> that run resumed from its step 10 on 1 worker."""
        run = self.runs / f"{stage}-{workers}w"
        if not run.exists():
            if workers == 2:
                self.train(run.name, f"deepspeed={stage}", *WORKERS[2])
            else:
                checkpoint = self.written_by(stage, 2) / f"step_{RESUME_AT[2]:07d}"
                scaling = [o for o in WORKERS[1] if o.startswith("scaling.")]
                self.train(run.name, f"deepspeed={stage}", f"resume={checkpoint}", *scaling)
        return run
