"""Token log-probabilities of serve.generator / serve.running_batch on the tiny export: read
off the batch's own forward passes, they equal a plain transformers forward of each prompt
alone, for the prompt (the prefill's) and for every generated token (each step's)."""

from __future__ import annotations

import torch
from greedy_reference import reference_ids

from serve.running_batch import RunningBatch
from serve.sampling import SamplingParams


def _direct_logprobs(gen, ids: list[int]) -> torch.Tensor:
    """log p(token j | tokens before j) for j >= 1, from a plain forward of the ids alone."""
    with torch.no_grad():
        logits = gen.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return logp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)


def test_prompt_logprobs_of_a_left_padded_batch_match_a_direct_forward(gen, prompts):
    # Scoring only (max_tokens 0), three prompts of different lengths in one prefill.
    params = [SamplingParams(max_tokens=0, prompt_logprobs=3) for _ in prompts]
    events = RunningBatch(gen).add(list(range(3)), prompts, params)
    for (key, delta), prompt in zip(events, prompts):
        assert delta.finish_reason == "length" and delta.token_count == 0 and delta.text == ""
        scored = delta.prompt_logprobs
        assert scored[0] is None and len(scored) == len(prompt)
        direct = _direct_logprobs(gen, prompt)
        got = torch.tensor([e.logprob for e in scored[1:]])
        assert torch.allclose(got, direct, atol=1e-4), key
        for entry, token in zip(scored[1:], prompt[1:]):
            assert entry.token_id == token and len(entry.top) == 3
            values = [v for _, v in entry.top]
            assert values == sorted(values, reverse=True) and entry.logprob <= values[0] + 1e-6


def test_generated_token_logprobs_come_from_the_step_that_sampled_them(gen, prompts):
    params = [
        SamplingParams(max_tokens=6, temperature=0.0, logprobs=2, prompt_logprobs=0)
        for _ in prompts
    ]
    batch, keys = RunningBatch(gen), list(range(3))
    merged = {k: [] for k in keys}
    first = {}
    events = batch.add(keys, prompts, params)
    while True:
        for key, delta in events:
            merged[key] += delta.logprobs
            if delta.prompt_logprobs is not None:
                first[key] = delta.prompt_logprobs
        if not batch:
            break
        events = batch.step()
    for key, prompt in zip(keys, prompts):
        generated = [e.token_id for e in merged[key]]
        assert generated == reference_ids(gen, prompt, 6)  # greedy: one entry per token
        # Each one as a direct forward of prompt + everything before it scores it.
        direct = _direct_logprobs(gen, prompt + generated)[len(prompt) - 1 :]
        got = torch.tensor([e.logprob for e in merged[key]])
        assert torch.allclose(got, direct, atol=1e-4)
        for entry in merged[key]:  # greedy picks the most likely token: it heads the top 2
            assert entry.top[0][0] == entry.token_id and len(entry.top) == 2
        assert len(first[key]) == len(prompt) and all(not e.top for e in first[key][1:])
