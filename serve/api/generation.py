"""Checked prompts through admission and the scheduler to an answer: one response body, or
the events of an SSE stream ending in `data: [DONE]`. What the answer looks like is the
serving class's `Shape` (serving_completion.py, serving_chat.py); this module only runs the
jobs, with time-to-first-token and token metrics. No Ray and no HTTP here: the router wraps
a stream's events in its HTTP response."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from pydantic import BaseModel

from serve.api.admission import Admission
from serve.api.errors import generation_failed
from serve.api.metrics import ServingMetrics
from serve.api.responses import Usage
from serve.generator import Delta
from serve.sampling import SamplingParams
from serve.scheduler import Job, Scheduler

Decode = Callable[[list[int]], str]  # token ids -> text (the tokenizer's decode)

# Answers carrying more log-probability entries than this are shaped and serialized on a
# thread: each entry decodes its token and its alternatives (a long echo has ~6 per token).
OFF_LOOP_ENTRIES = 1_024


class RenderedJSON(str):
    """A response body already serialized (off the event loop); the router sends it as is."""


class Shape(Protocol):
    """How one request's results become its response and stream chunks."""

    def first_chunk(self) -> BaseModel | None: ...  # sent before any token, if any

    def chunk(self, d: Delta | None, usage: Usage | None = None, index: int = 0) -> BaseModel: ...

    def body(self, results: list[dict], usage: Usage) -> BaseModel: ...


class Generation:
    def __init__(self, scheduler: Scheduler, admission: Admission, metrics: ServingMetrics):
        self.scheduler, self.admission, self.metrics = scheduler, admission, metrics

    async def respond(
        self,
        prompt_ids: list[list[int]],
        params: SamplingParams,
        shape: Shape,
        stream: bool,
        with_usage: bool = False,
        n: int = 1,
        adapter: str | None = None,
    ) -> dict | AsyncIterator[str]:
        """The response body, or (``stream``: a single prompt) the stream's SSE events.
        ``n`` choices per prompt, each its own job (row): choice i answers prompt i // n.
        ``adapter``: the LoRA adapter every prompt decodes through (None = the base)."""
        # Every check is done: from here only admission can refuse, and it answers before
        # any stream starts, so an error is always a real HTTP status. The jobs own the
        # admission slots from here on: the scheduler releases each when its job ends.
        rows = [ids for ids in prompt_ids for _ in range(n)]
        scored = [len(ids) if params.prompt_logprobs is not None else 0 for ids in rows]
        costs = [len(ids) + params.max_tokens for ids in rows]
        releases = self.admission.admit(costs, scored)
        jobs = [
            self.scheduler.submit(ids, choice_params(params, i % n), release, adapter)
            for i, (ids, release) in enumerate(zip(rows, releases))
        ]
        if stream:
            events = self._sse(jobs, shape, with_usage)
            # A client gone before the first byte never starts the stream, so its finally
            # never runs: dropping the stream unread cancels the jobs all the same.
            for job in jobs:
                weakref.finalize(events, job.cancel)
            return events
        try:
            results = await asyncio.gather(*(self._collect(job) for job in jobs))
        except Exception as e:
            for job in jobs:
                job.cancel()
            raise generation_failed(e) from None
        prompt_tokens = sum(len(ids) for ids in prompt_ids)
        completion_tokens = sum(r["completion_tokens"] for r in results)
        usage = Usage.of(prompt_tokens, completion_tokens)
        if sum(_entries(r["logprobs"], r["prompt_logprobs"]) for r in results) > OFF_LOOP_ENTRIES:
            body = shape.body  # decodes every entry's tokens: on a thread, and serialized there
            return await asyncio.to_thread(
                lambda: RenderedJSON(body(results, usage).model_dump_json())
            )
        return shape.body(results, usage).model_dump()

    async def _deltas(self, job: Job) -> AsyncIterator[Delta]:
        """The scheduler's Deltas for one job, with time-to-first-token and token metrics."""
        submitted_s, first = time.perf_counter(), True
        async for delta in self.scheduler.events(job):
            if first:
                self.metrics.observe_time_to_first_token_s(time.perf_counter() - submitted_s)
                first = False
            if delta.finish_reason and delta.token_count:  # scoring only generates none
                self.metrics.count_generated_tokens(delta.token_count)
            yield delta

    async def _collect(self, job: Job) -> dict:
        text, last, logprobs, prompt_logprobs = [], None, [], None
        async for delta in self._deltas(job):
            text.append(delta.text)
            logprobs += delta.logprobs
            if delta.prompt_logprobs is not None:
                prompt_logprobs = delta.prompt_logprobs
            last = delta
        return {
            "text": "".join(text),
            "finish_reason": last.finish_reason if last else "stop",
            "completion_tokens": last.token_count if last else 0,
            "logprobs": logprobs,
            "prompt_logprobs": prompt_logprobs,
        }

    async def _sse(self, jobs: list[Job], shape: Shape, with_usage: bool) -> AsyncIterator[str]:
        """One stream for the choices of one prompt (``jobs``), their chunks interleaved as
        their tokens come, each with its choice's index."""
        tokens = [0] * len(jobs)
        try:
            first_chunk = shape.first_chunk()
            if first_chunk:
                yield f"data: {first_chunk.model_dump_json()}\n\n"
            async for index, delta in _interleaved([self._deltas(job) for job in jobs]):
                if delta.text or delta.finish_reason or delta.logprobs or delta.prompt_logprobs:
                    large = _entries(delta.logprobs, delta.prompt_logprobs) > OFF_LOOP_ENTRIES
                    yield f"data: {await _chunk_json(shape, delta, large, index)}\n\n"
                tokens[index] = delta.token_count
            if with_usage:  # the prompt counted once, as in a whole response
                usage = Usage.of(len(jobs[0].prompt_ids), sum(tokens))
                yield f"data: {shape.chunk(None, usage).model_dump_json()}\n\n"
        except Exception as e:
            # The status line is gone already: the failure is the stream's last event, in
            # the OpenAI error shape (the openai client raises it as an APIError).
            self.metrics.count_request("stream", "stream_error")
            yield f"data: {json.dumps(generation_failed(e).body())}\n\n"
        finally:
            for job in jobs:
                job.cancel()
        yield "data: [DONE]\n\n"


def choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index``'s params: a seeded request seeds choice j with seed + j, as vLLM
    seeds its parallel samples, so that the n choices differ and each is reproducible."""
    if params.seed is None or index == 0:
        return params
    return dataclasses.replace(params, seed=params.seed + index)


async def _interleaved(streams: list[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """(index, Delta) from several streams as each comes; the first failure is raised."""
    if len(streams) == 1:  # the common case, with no task in between
        async for delta in streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async for delta in stream:
                queue.put_nowait((index, delta))
        except Exception as e:
            queue.put_nowait((index, e))
        queue.put_nowait((index, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()


def _entries(logprobs: list, prompt_logprobs: list | None) -> int:
    return len(logprobs) + len(prompt_logprobs or [])


async def _chunk_json(shape: Shape, delta: Delta, large: bool, index: int = 0) -> str:
    """A stream chunk serialized; a large one (an echoed prompt's logprobs) on a thread."""
    if large:
        return await asyncio.to_thread(lambda: shape.chunk(delta, index=index).model_dump_json())
    return shape.chunk(delta, index=index).model_dump_json()
