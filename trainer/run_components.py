"""The parts of the training loop that decide for themselves when they act, as torchtitan's
trainer does: the reporter logs every ``log_every_steps`` and at the end, the evaluator
validates every ``eval_every_steps`` and at the end, the checkpointer saves every
``checkpoint_every_steps`` and at the end, and a finish request (`make finish`) moves the end
to the next log step. The loop (trainer/loop.py) only calls them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from console import log
from rundir import layout
from rundir.store import open_location
from trainer.checkpoint import save_and_report

# Rank 0 looks for a finish request at most this often: on a bucket each look is a request.
FINISH_LOOK_EVERY_S = 2.0


def is_due(step: int, every: int, end_step: int) -> bool:
    return step % every == 0 or step == end_step


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained on, all ranks
    samples: int = 0  # sequences of the global order consumed, all ranks (loader.py)


class Reporter:
    """Window metrics (loss, lr, grad norm, tokens/s, MFU and the objective's own) on the
    steps it is due, written to metrics.jsonl and TensorBoard, sent to the job's tracking
    run (when there is one) and shown by rank 0."""

    def __init__(
        self, speed, objective, writer, every: int, end_step: int, max_steps: int, tracker=None
    ):
        self.speed, self.objective, self.writer = speed, objective, writer
        self.tracker = tracker  # rank 0's tracking.metrics_logger.MetricsLogger, or None
        self.every, self.end_step, self.max_steps = every, end_step, max_steps
        self.group_start: int | None = None
        self.startup: dict | None = None

    def start_group(self, step: int, startup: StartupClock) -> None:
        """The first row after (re)starting a worker group says where it took over and how
        its start-up went."""
        self.group_start, self.startup = step, startup.timeline

    def window(self, state: TrainState, world: int) -> dict:
        if not is_due(state.step, self.every, self.end_step):
            return {}
        metrics = self.speed.window()
        metrics["tokens"] = state.tokens
        metrics["workers"] = world  # an elastic run's group size, step by step
        if self.group_start is not None:
            metrics["started_at_step"], self.group_start = self.group_start, None
            metrics["startup"] = self.startup
        metrics.update(self.objective.window())
        return metrics

    def write(self, step: int, metrics: dict) -> None:
        if metrics and self.writer is not None:  # only rank 0 has a writer
            self.writer.write(step, metrics)
            if self.tracker is not None:
                self.tracker.log(step, metrics)  # queued: the loop never waits on it

    def log(self, step: int, metrics: dict) -> None:
        """Written, and shown as a progress line."""
        if metrics and self.writer is not None:
            self.write(step, metrics)
            log.info(progress_line(step, self.max_steps, metrics, self.speed.elapsed_s()))


class Evaluator:
    """Validation loss (or the objective's own validation) at step 0 and when due."""

    def __init__(self, objective, engine, loader, batches: int, device, every: int, end: int):
        self.objective, self.engine, self.loader = objective, engine, loader
        self.batches, self.device, self.every, self.end_step = batches, device, every, end

    def evaluate(self) -> dict:
        return self.objective.evaluate(self.engine, self.loader, self.batches, self.device)

    def when_due(self, step: int) -> dict:
        return self.evaluate() if is_due(step, self.every, self.end_step) else {}


class Checkpointer:
    """A resumable checkpoint of every rank, reported to Ray Train, when due. Ray hears of
    checkpoints only: every report waits until Ray Train's controller has drained its
    one-result queue, which it polls every 2 s, so reporting each log window capped the loop
    at 10 windows per 2 s whatever the hardware (issue #18)."""

    def __init__(self, engine, every: int, end_step: int, rank: int, world: int, before=None):
        self.engine, self.every, self.end_step = engine, every, end_step
        self.rank, self.world = rank, world
        # Called before a checkpoint is reported (rank 0: what it logged so far reaches the
        # tracker's store and the run's URI): once Ray holds the checkpoint, a group killed
        # next restarts from it and never logs those steps again.
        self.before = before

    def when_due(self, state: TrainState, metrics: dict) -> None:
        if is_due(state.step, self.every, self.end_step):
            if self.before is not None:
                self.before()
            report = {"step": state.step, **metrics}
            save_and_report(self.engine, asdict(state), report, state.step, self.rank, self.world)


class FinishRequest:
    """`make finish RUN=...` (cluster/ops/finish.py) leaves a file in the run directory; the
    run then ends at its next log step as at its last: validated, checkpointed, exported
    and summarised. Rank 0 looks for the file, and every rank hears its answer through one
    broadcast on each log step, so all ranks end on the same step."""

    def __init__(self, run_location: str, every: int, rank: int, device: torch.device):
        self.request = open_location(run_location).child(layout.FINISH_REQUEST)
        self.every, self.rank, self.device = every, rank, device
        self.last_look = -FINISH_LOOK_EVERY_S
        self.granted = False

    def when_due(self, step: int, end_step: int) -> bool:
        """Every rank, every step (a collective on log steps): whether to end at ``step``."""
        if step % self.every or step >= end_step:
            return False
        seen = 0
        if self.rank == 0 and time.monotonic() - self.last_look >= FINISH_LOOK_EVERY_S:
            self.last_look = time.monotonic()
            seen = int(self.request.is_file())
        flag = torch.tensor([seen], dtype=torch.int32, device=self.device)
        dist.broadcast(flag, src=0)
        self.granted = bool(flag.item())
        return self.granted

    def end_here(self, step: int, *components) -> int:
        """The run's end moved to ``step`` for the components that act "at the end"."""
        for component in components:
            component.end_step = step
        if self.rank == 0:
            log.info(f"finish requested ({self.request.uri}): ending at step {step}")
        return step

    def withdraw(self) -> None:
        """Rank 0, once the run has ended as asked: a later resume of the run starts clean."""
        if self.granted and self.rank == 0:
            self.request.delete_file()


class StartupClock:
    """This worker group's start-up timeline (worker start, engine built, first step), as
    wall-clock times; the group's first metrics row carries it (Reporter), where the
    driver's summary reads it back."""

    def __init__(self):
        self.timeline = {"worker_start": time.time()}

    def mark(self, event: str) -> None:
        self.timeline.setdefault(event, time.time())


def progress_line(step: int, max_steps: int, metrics: dict, elapsed_s: float) -> str:
    eta = elapsed_s / step * (max_steps - step)
    parts = [f"step {step}/{max_steps}"]
    if "loss" in metrics:
        parts += [
            f"loss {metrics['loss']:.3f}",
            f"lr {metrics['lr']:.2e}",
            f"{metrics['tokens_per_s']:,.0f} tok/s",
            f"MFU {metrics['mfu']:.1%}",
        ]
    if "reward_accuracy" in metrics:
        parts.append(f"reward acc {metrics['reward_accuracy']:.2f}")
    if "val_ppl" in metrics:
        parts.append(f"val {metrics['val_loss']:.3f} (ppl {metrics['val_ppl']:.1f})")
    elif "val_reward_accuracy" in metrics:
        parts.append(
            f"val {metrics['val_loss']:.3f} (reward acc {metrics['val_reward_accuracy']:.2f}, "
            f"margin {metrics['val_reward_margin']:.3f})"
        )
    parts.append(f"eta {eta:.0f}s")
    return " | ".join(parts)
