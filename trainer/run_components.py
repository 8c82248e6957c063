"""The parts of the training loop that decide for themselves when they act, as torchtitan's
trainer does: the reporter logs every ``log_every_steps`` and at the end, the evaluator
validates every ``eval_every_steps`` and at the end, the checkpointer saves every
``checkpoint_every_steps`` and at the end. The loop (trainer/loop.py) only calls them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from console import log
from trainer.checkpoint import save_and_report


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
