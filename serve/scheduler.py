"""Continuous batching behind one async call: ``Scheduler.generate(prompt_ids, params)``
yields the request's Deltas while it rides in the replica's single running batch.

One decode loop runs while anything is waiting or decoding. Each round admits waiting
requests into the running batch (a prefill; they join between two steps instead of waiting
for the batch to finish), then decodes for up to ``stream_interval_s`` off the event loop,
so arrivals, disconnects and health checks are still handled. No Ray and no HTTP here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from serve.generator import Delta, Generator, SamplingParams
from serve.running_batch import RunningBatch


@dataclass(eq=False)  # compared and hashed by identity: a job is a key of the running batch
class _Job:
    """One prompt waiting for, or riding in, the running batch."""

    prompt_ids: list[int]
    params: SamplingParams
    cancelled: bool = False
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # Deltas, or an exception


class Scheduler:
    def __init__(
        self,
        generator: Generator,
        max_batch_size: int,
        batch_wait_timeout_s: float = 0.0,
        stream_interval_s: float = 0.02,
    ) -> None:
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.stream_interval_s = stream_interval_s
        self._batch = RunningBatch(generator)  # touched only by the decode thread
        self._waiting: list[_Job] = []
        self._decoder: asyncio.Task | None = None

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """This prompt's Deltas, the last one with a finish_reason. Leaving early (a client
        that disconnected) cancels it: the decode loop drops it before its next step."""
        job = _Job(prompt_ids, params)
        self._waiting.append(job)
        if self._decoder is None or self._decoder.done():
            self._decoder = asyncio.get_running_loop().create_task(self._decode_loop())
        try:
            while True:
                delta = await job.events.get()
                if isinstance(delta, BaseException):
                    raise delta
                yield delta
                if delta.finish_reason:
                    return
        finally:
            job.cancelled = True

    async def _decode_loop(self) -> None:
        while self._waiting or self._batch:
            if not self._batch:
                # An idle batch waits a moment, so a burst of arrivals shares one prefill.
                await asyncio.sleep(self.batch_wait_timeout_s)
            joining = self._take_waiting()
            try:
                merged = await asyncio.to_thread(self._decode_round, joining)
            except Exception as e:  # a model failure: fail these requests, keep serving
                for job in [*joining, *self._batch.keys]:
                    job.events.put_nowait(e)
                self._batch = RunningBatch(self.generator)
                continue
            for job, delta in merged.items():
                job.events.put_nowait(delta)

    def _take_waiting(self) -> list[_Job]:
        self._waiting = [j for j in self._waiting if not j.cancelled]
        if self._batch and not self._batch.can_join:
            return []
        room = self.max_batch_size - len(self._batch)
        joining, self._waiting = self._waiting[:room], self._waiting[room:]
        return joining

    def _decode_round(self, joining: list[_Job]) -> dict:
        """Prefill the joining jobs, then decode steps for up to stream_interval_s; each
        job's events merged into one Delta, which keeps the per-token cost of the thread hop
        and of the HTTP stream off the hot path."""
        merged: dict = {}
        deadline = time.perf_counter() + self.stream_interval_s
        if joining:
            prompts = [j.prompt_ids for j in joining]
            _merge_events(merged, self._batch.add(joining, prompts, [j.params for j in joining]))
        while self._batch and time.perf_counter() < deadline:
            _merge_events(merged, self._batch.step(cancelled=lambda job: job.cancelled))
        return merged


def _merge(a: Delta | None, b: Delta | None) -> Delta | None:
    """Two consecutive events of one row as one (None = the row had finished already)."""
    if a is None or b is None:
        return a or b
    return Delta(a.text + b.text, b.token_count, b.finish_reason)


def _merge_events(merged: dict, events: list) -> None:
    for job, delta in events:
        merged[job] = _merge(merged.get(job), delta)
