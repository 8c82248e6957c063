"""Continuous batching behind two calls: ``Scheduler.submit(prompt_ids, params)`` queues a
prompt and returns its Job; ``Scheduler.events(job)`` yields its Deltas while it rides in the
replica's single running batch (``generate`` does both).

One decode loop runs while anything is waiting or decoding. Each round admits waiting jobs
into the running batch (a prefill; they join between two steps instead of waiting for the
batch to finish) as far as the batch's token budget allows, then decodes for up to
``stream_interval_s`` off the event loop, so arrivals, disconnects and health checks are
still handled. No Ray and no HTTP here.

A job ends exactly once, whatever happens to whoever waits on it: finished, failed, or
cancelled and dropped. Its ``on_done`` callback runs then, from the decode loop, so what the
HTTP layer accounts per request is released even when no client code runs again (a client
that disconnected before the first byte).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from schemas.serving import ServeConfig
from serve.generator import Delta, Generator
from serve.running_batch import RunningBatch
from serve.sampling import SamplingParams


@dataclass(eq=False)  # compared and hashed by identity: a job is a key of the running batch
class Job:
    """One prompt waiting for, or riding in, the running batch."""

    prompt_ids: list[int]
    params: SamplingParams
    on_done: Callable[[], None] | None = None
    adapter: str | None = None  # its LoRA adapter (serve/adapters.py); None = the base
    cancelled: bool = False
    done: bool = False
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # Deltas, or an exception

    @property
    def tokens(self) -> int:
        """The widest this row's KV cache can grow: prompt plus every new token."""
        return len(self.prompt_ids) + self.params.max_tokens

    def cancel(self) -> None:
        """Its client is gone: the decode loop drops it before its next step."""
        self.cancelled = True

    def end(self, last: Delta | BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        if last is not None:
            self.events.put_nowait(last)
        if self.on_done is not None:
            self.on_done()


class Scheduler:
    def __init__(
        self,
        generator: Generator,
        max_batch_size: int,
        batch_wait_timeout_s: float = 0.0,
        stream_interval_s: float = 0.05,
        max_batch_tokens: int | None = None,
        max_loras: int | None = None,
    ) -> None:
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.stream_interval_s = stream_interval_s
        # Rows x widest row of the running batch's KV cache (rows are left-padded to the
        # widest); None = only max_batch_size bounds it.
        self.max_batch_tokens = max_batch_tokens
        # Most distinct LoRA adapters in the running batch (vLLM's max_loras): each adds a
        # pass over its rows to every LoRA layer. None = no limit.
        self.max_loras = max_loras
        self._batch = RunningBatch(generator)  # touched only by the decode thread
        # The decode thread of its own: off-loop work of requests (tokenizing, rendering,
        # shaping big answers) on the default executor never makes a decode round wait.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zeroray-decode")
        self._waiting: list[Job] = []
        self._decoder: asyncio.Task | None = None

    @classmethod
    def from_config(cls, generator: Generator, config: ServeConfig) -> Scheduler:
        return cls(
            generator,
            config.max_batch_size,
            config.batch_wait_timeout_s,
            config.stream_interval_s,
            config.max_batch_tokens,
            config.lora.max_loras,
        )

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_done: Callable[[], None] | None = None,
        adapter: str | None = None,
    ) -> Job:
        job = Job(prompt_ids, params, on_done, adapter)
        if self.max_batch_tokens is not None and job.tokens > self.max_batch_tokens:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceeds "
                f"the replica's batch token budget of {self.max_batch_tokens}"
            )
        self._waiting.append(job)
        if self._decoder is None or self._decoder.done():
            self._decoder = asyncio.get_running_loop().create_task(self._decode_loop())
        return job

    async def events(self, job: Job) -> AsyncIterator[Delta]:
        """The job's Deltas, the last one with a finish_reason; a row that failed raises its
        exception here. Leaving early (a client that disconnected) cancels the job."""
        try:
            while True:
                delta = await job.events.get()
                if isinstance(delta, BaseException):
                    raise delta
                yield delta
                if delta.finish_reason:
                    return
        finally:
            job.cancel()

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncIterator[Delta]:
        async for delta in self.events(self.submit(prompt_ids, params, adapter=adapter)):
            yield delta

    async def run_between_rounds(self, fn: Callable, *args):
        """``fn(*args)`` on the decode thread, between two decode rounds: what changes the
        model's modules (loading a LoRA adapter) never runs during a forward pass."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def adapters_in_use(self) -> set[str]:
        """The adapters of the jobs waiting or decoding."""
        jobs = [*self._waiting, *self._batch.keys]
        return {job.adapter for job in jobs if job.adapter is not None and not job.done}

    async def _decode_loop(self) -> None:
        while self._waiting or self._batch:
            if not self._batch:
                # An idle batch waits a moment, so a burst of arrivals shares one prefill.
                await asyncio.sleep(self.batch_wait_timeout_s)
            joining = self._take_waiting()
            try:
                loop = asyncio.get_running_loop()
                merged = await loop.run_in_executor(self._executor, self._decode_round, joining)
            except Exception as e:  # a decoding step failed: the batch's rows cannot go on
                for job in [*joining, *self._batch.keys]:
                    job.end(e)
                self._batch = RunningBatch(self.generator)
                continue
            for job, delta in merged.items():
                if isinstance(delta, BaseException) or delta.finish_reason:
                    job.end(delta)
                else:
                    job.events.put_nowait(delta)

    def _take_waiting(self) -> list[Job]:
        held = getattr(self.generator, "peft_model", None)
        for job in self._waiting:
            if job.cancelled:
                job.end()
            elif job.adapter is not None and (held is None or job.adapter not in held.peft_config):
                # Unloaded between its request's check and here: this job fails, not the batch.
                job.end(LookupError(f"adapter {job.adapter!r} was unloaded"))
        self._waiting = [j for j in self._waiting if not j.done]
        if self._batch and not self._batch.can_join:
            return []
        rows = len(self._batch)
        widest = max((job.tokens for job in self._batch.keys), default=0)
        loras = {job.adapter for job in self._batch.keys if job.adapter is not None}
        joining = []
        # First come, first served: a job that does not fit yet waits, and so does every
        # job behind it, so that a wide prompt is never starved by narrow ones. A job whose
        # adapter would pass max_loras waits alone: the jobs behind it may go first.
        for job in self._waiting:
            if rows + len(joining) >= self.max_batch_size:
                break
            if (
                job.adapter is not None
                and job.adapter not in loras
                and self.max_loras is not None
                and len(loras) >= self.max_loras
            ):
                continue
            wider = max(widest, job.tokens)
            if (
                self.max_batch_tokens is not None
                and (rows + len(joining) + 1) * wider > self.max_batch_tokens
                and rows + len(joining) > 0
            ):
                break
            joining.append(job)
            widest = wider
            if job.adapter is not None:
                loras.add(job.adapter)
        taken = set(joining)
        self._waiting = [job for job in self._waiting if job not in taken]
        return joining

    def _decode_round(self, joining: list[Job]) -> dict:
        """Prefill the joining jobs, then decode steps for up to stream_interval_s; each
        job's events merged into one Delta, which keeps the per-token cost of the thread hop
        and of the HTTP stream off the hot path."""
        merged: dict = {}
        if joining:
            # A round that admits returns right after the prefill: the newcomers' first
            # tokens go out at once (time to first token), and decoding resumes next round.
            prompts = [j.prompt_ids for j in joining]
            try:
                params, adapters = [j.params for j in joining], [j.adapter for j in joining]
                events = self._batch.add(joining, prompts, params, adapters)
            except Exception as e:  # the prefill failed: the newcomers end, the batch goes on
                return {job: e for job in joining}
            _merge_events(merged, events)
            return merged
        deadline = time.perf_counter() + self.stream_interval_s
        while self._batch and time.perf_counter() < deadline:
            _merge_events(merged, self._batch.step(cancelled=lambda job: job.cancelled))
        return merged


def _merge(a, b):
    """Two consecutive events of one row as one: Deltas add up, a failure ends the row."""
    if a is None or b is None:
        return a or b
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return a if isinstance(a, BaseException) else b
    return Delta(
        a.text + b.text,
        b.token_count,
        b.finish_reason,
        a.logprobs + b.logprobs,
        a.prompt_logprobs if a.prompt_logprobs is not None else b.prompt_logprobs,
    )


def _merge_events(merged: dict, events: list) -> None:
    for job, delta in events:
        merged[job] = _merge(merged.get(job), delta)
