"""The batch arithmetic of a run, in one place: what a global batch is, how a group of any
size reaches it, how many steps an epoch takes, and what a checkpoint's batch allows.

The global batch is ``micro_batch_size x grad_accum_steps x max_workers`` sequences per
optimizer step. It is fixed for the whole run: an elastic group that shrinks accumulates more
micro-batches per step, a resume on another worker count accumulates what keeps the
checkpoint's batch, so every step sees as many sequences and the LR schedule holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from schemas.fields import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    micro_batch_size: int  # sequences per worker per forward pass
    grad_accum_steps: int  # micro-batches per optimizer step with max_workers workers
    min_workers: int
    max_workers: int
    num_workers_setting: object = None  # the configured value, quoted in errors

    @classmethod
    def of(cls, trainer, scaling) -> BatchPlan:
        """From the trainer and scaling sections of a validated config."""
        return cls(
            trainer.micro_batch_size,
            trainer.grad_accum_steps,
            scaling.min_workers,
            scaling.max_workers,
            scaling.num_workers,
        )

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step, whatever the group's size."""
        return self.micro_batch_size * self.grad_accum_steps * self.max_workers

    def worker_counts(self) -> range:
        return range(self.min_workers, self.max_workers + 1)

    def accum_for(self, world: int) -> int:
        """Micro-batches per step on ``world`` workers that keep the global batch."""
        return self.grad_accum_steps * self.max_workers // world

    def steps_for_epochs(self, epochs: float, rows: int) -> int:
        """Optimizer steps that pass ``epochs`` times over ``rows`` training rows."""
        return max(1, math.ceil(epochs * rows / self.global_batch))

    def check_elastic(self) -> None:
        """Every count of [min, max] must split the global batch into whole micro-batches."""
        units = self.grad_accum_steps * self.max_workers  # micro-batches per step
        counts = list(self.worker_counts())
        bad = [w for w in counts if units % w]
        if not bad:
            return
        fix = next(
            a
            for a in range(1, math.lcm(*counts) + 1)
            if all(a * counts[-1] % w == 0 for w in counts)
        )
        raise ConfigError(
            f"scaling.num_workers={self.num_workers_setting}: the global batch of {units} "
            f"micro-batches (trainer.grad_accum_steps {self.grad_accum_steps} x "
            f"{self.max_workers} workers) cannot be split evenly over {bad[0]} workers; "
            f"allowed: trainer.grad_accum_steps={fix} (or a multiple), or a narrower range"
        )

    def keeping(self, global_batch: int | None, checkpoint: str, written_by: int) -> BatchPlan:
        """The plan that continues a checkpoint of ``global_batch`` sequences per step, written
        by ``written_by`` workers: same micro-batch, the accumulation that keeps its batch. A
        worker count that cannot keep it is refused, naming the counts that can."""
        elastic = self.min_workers != self.max_workers
        if not elastic and written_by == self.max_workers:
            return self
        micro = self.micro_batch_size
        if global_batch is None:
            raise ConfigError(
                f"scaling.num_workers={self.num_workers_setting} but checkpoint {checkpoint} was "
                f"written by {written_by} workers, before zeroray recorded global batches; "
                f"allowed: scaling.num_workers={written_by}"
            )
        bad = [w for w in self.worker_counts() if global_batch % (micro * w)]
        if bad:
            fits = [
                str(w)
                for w in range(1, global_batch // micro + 1)
                if global_batch % (micro * w) == 0
            ]
            raise ConfigError(
                f"scaling.num_workers={self.num_workers_setting}: checkpoint {checkpoint} was "
                f"written by {written_by} workers with a global batch of {global_batch} samples, "
                f"which {bad[0]} workers x micro_batch_size {micro} cannot divide; allowed: "
                f"{', '.join(fits)} (a count, or a [min, max] of only these), or another "
                "trainer.micro_batch_size"
            )
        return replace(self, grad_accum_steps=global_batch // (micro * self.max_workers))

    def check_split_sizes(self, sequences: dict[str, int], seq_len: int) -> None:
        """One global batch of training sequences, and a validation sequence for every rank,
        or collectives would hang."""
        world = self.max_workers
        for split, need in (("train", self.global_batch), ("validation", world)):
            have = sequences[split]
            if have < need:
                raise ConfigError(
                    f"trainer.seq_len={seq_len}: the {split} split packs into {have} "
                    f"sequences, fewer than the {need} that {world} workers need; allowed: more "
                    "data, a shorter seq_len or a smaller micro_batch_size"
                )
