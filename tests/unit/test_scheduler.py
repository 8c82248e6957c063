"""serve.scheduler and serve.api.admission without Ray or HTTP: the batch's token budget, and
that every admitted prompt is released exactly once however its job ends."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from serve.api.admission import Admission
from serve.api.errors import APIError
from serve.generator import Generator
from serve.sampling import SamplingParams
from serve.scheduler import Scheduler


@pytest.fixture(scope="module")
def gen(tmp_path_factory, tiny_tokenizer) -> Generator:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32, n_layer=1, n_head=2, n_positions=128, vocab_size=len(tiny_tokenizer)
    )
    path = tmp_path_factory.mktemp("sched") / "tiny"
    GPT2LMHeadModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return Generator(str(path), device="cpu")


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0)


def test_admission_counts_prompts_and_tokens_and_releases_once():
    seen = []
    admission = Admission(max_prompts=3, max_tokens=100, retry_after_s=4, on_change=seen.append)
    releases = admission.admit([30, 30])
    with pytest.raises(APIError) as refused:
        admission.admit([10, 10])  # 4 prompts > 3
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "4"}
    with pytest.raises(APIError, match="tokens"):
        admission.admit([50])  # 110 tokens > 100
    releases[0]()
    releases[0]()  # twice: counted once
    assert (admission.prompts, admission.tokens) == (1, 30)
    admission.admit([50])
    assert seen == [2, 1, 2]


def test_admission_counts_scored_prompt_tokens():
    admission = Admission(max_prompts=9, max_tokens=1_000, retry_after_s=1, max_scored_tokens=50)
    releases = admission.admit([40], scored=[30])
    with pytest.raises(APIError) as busy:
        admission.admit([40], scored=[30])  # 60 scored > 50, while the first is in flight
    assert busy.value.status == 429
    with pytest.raises(APIError) as never:
        admission.admit([60], scored=[60])  # over the budget alone: it could never run
    assert never.value.status == 400 and never.value.param == "logprobs"
    admission.admit([40])  # nothing to score: not counted
    releases[0]()
    admission.admit([40], scored=[30])
    assert admission.scored == 30


def test_a_failing_prefill_ends_only_the_joining_jobs(gen, monkeypatch):
    prompt = gen.encode("The list of arguments is")
    solo = asyncio.run(_alone(Scheduler(gen, max_batch_size=8), prompt, greedy(30)))
    scheduler = Scheduler(gen, max_batch_size=8)
    real_forward, armed = gen.forward, []

    def forward(ids, mask, cache, every_position=False):
        if armed and cache is None:  # a prefill, once the running job is decoding
            raise RuntimeError("out of memory (a stand-in)")
        return real_forward(ids, mask, cache, every_position)

    monkeypatch.setattr(gen, "forward", forward)

    async def run():
        running = scheduler.submit(prompt, greedy(30))
        events = scheduler.events(running)
        first = await anext(events)
        armed.append(True)
        joining = [scheduler.submit(prompt, greedy(5)) for _ in range(2)]
        rest = [d async for d in events]
        for job in joining:
            with pytest.raises(RuntimeError, match="out of memory"):
                [d async for d in scheduler.events(job)]
        return [first, *rest]

    beside = asyncio.run(run())
    assert "".join(d.text for d in beside) == "".join(d.text for d in solo)
    assert beside[-1].token_count == 30


async def _alone(scheduler, prompt, params) -> list:
    return [d async for d in scheduler.events(scheduler.submit(prompt, params))]


def test_token_budget_holds_a_wide_job_back_until_the_batch_has_room(gen):
    prompt = gen.encode("The list of arguments is")
    wide = len(prompt) + 40
    # Room for two rows as wide as this one, not three: the third waits for a slot.
    scheduler = Scheduler(gen, max_batch_size=8, max_batch_tokens=2 * wide)
    widths = []
    real_step = scheduler._batch.step

    def watch(cancelled=None):
        widths.append(len(scheduler._batch))
        return real_step(cancelled)

    scheduler._batch.step = watch

    async def run():
        jobs = [scheduler.submit(prompt, greedy(40)) for _ in range(3)]
        results = []
        for job in jobs:
            results.append([d async for d in scheduler.events(job)])
        return results

    results = asyncio.run(run())
    assert max(widths) == 2
    assert all(r[-1].finish_reason == "length" and r[-1].token_count == 40 for r in results)
    with pytest.raises(ValueError, match="budget"):
        Scheduler(gen, 8, max_batch_tokens=wide - 1).submit(prompt, greedy(40))


def test_every_job_releases_its_slot_however_it_ends(gen):
    prompt = gen.encode("Return")
    admission = Admission(max_prompts=10, max_tokens=10_000, retry_after_s=1)
    scheduler = Scheduler(gen, max_batch_size=4)

    async def run():
        releases = admission.admit([len(prompt) + 20] * 4)
        finished, never_read, read_one, failing = (
            scheduler.submit(prompt, greedy(20), r) for r in releases
        )
        failing.params.seed = 2**70  # torch refuses it: this job fails alone
        never_read.cancel()  # a client gone before its first byte
        [d async for d in scheduler.events(finished)]
        async for _ in scheduler.events(read_one):
            break  # a client gone mid-stream
        with pytest.raises(ValueError, match="Overflow"):
            [d async for d in scheduler.events(failing)]
        while scheduler._decoder and not scheduler._decoder.done():
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert (admission.prompts, admission.tokens) == (0, 0)
