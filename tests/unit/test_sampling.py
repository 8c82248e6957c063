"""serve/sampling.py through serve.generator on the tiny export: each of vLLM's sampling
controls does what it says to the tokens a row generates, rows with different controls
decode in one batch exactly as each does alone, and a seeded sampled row stays reproducible
whatever its batch mates set."""

from __future__ import annotations

import pytest
import torch
from greedy_reference import reference_ids

import serve.generator as generator
from serve.running_batch import RunningBatch
from serve.sampling import RowSampler, SamplingParams


def greedy(max_tokens: int = 10, **controls) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **controls)


def ids_of(gen, prompts, params) -> list[list[int]]:
    """Each row's sampled ids (end tokens included), all rows decoded in one running batch."""
    picked: dict[int, list[int]] = {}  # by row, in the order the rows were started
    real = generator._sample_row

    def recording(logits, row):
        token = real(logits, row)
        picked.setdefault(id(row), []).append(int(token))
        return token

    generator._sample_row = recording
    try:
        batch = RunningBatch(gen)
        batch.add(list(range(len(prompts))), prompts, params)
        while batch:
            batch.step()
    finally:
        generator._sample_row = real
    return list(picked.values())


def test_top_k_1_at_temperature_1_is_greedy(gen, prompts):
    sampled = [SamplingParams(max_tokens=10, temperature=1.0, top_k=1, seed=s) for s in (1, 2, 3)]
    got = ids_of(gen, prompts, sampled)
    assert got == [reference_ids(gen, p, 10) for p in prompts]
    # The control is live: without top_k the same seeds sample something else.
    plain = [SamplingParams(max_tokens=10, temperature=1.0, seed=s) for s in (1, 2, 3)]
    assert ids_of(gen, prompts, plain) != got


def test_min_p_1_keeps_only_the_likeliest_token(gen, prompts):
    params = [SamplingParams(max_tokens=8, temperature=1.5, min_p=1.0, seed=5)]
    assert ids_of(gen, prompts[:1], params) == [reference_ids(gen, prompts[0], 8)]


def test_logit_bias_forbids_and_forces_a_token(gen, prompts):
    base = reference_ids(gen, prompts[1], 10)
    banned = base[0]
    [without] = ids_of(gen, prompts[1:2], [greedy(logit_bias={banned: -100.0})])
    assert banned not in without
    forced = max(set(range(gen.vocab_rows)) - set(base) - gen.eos_ids)
    [always] = ids_of(gen, prompts[1:2], [greedy(logit_bias={forced: 100.0})])
    assert always == [forced] * 10


def test_repetition_penalty_matches_transformers_generate(gen, prompts):
    for prompt in prompts:
        [got] = ids_of(gen, [prompt], [greedy(12, repetition_penalty=1.8)])
        assert got == reference_ids(gen, prompt, 12, repetition_penalty=1.8)
        assert got != reference_ids(gen, prompt, 12)  # it changed something here


def test_presence_penalty_repeats_fewer_tokens(gen, prompts):
    plain, penalized = ids_of(gen, [prompts[0]] * 2, [greedy(20), greedy(20, presence_penalty=2.0)])
    assert len(set(plain)) < len(plain)  # the tiny model repeats itself greedily
    assert len(set(penalized)) > len(set(plain))


def test_presence_and_frequency_penalties_are_openais_definition():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
    output = [0, 0, 2]
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, temperature=0)
    sampler = RowSampler(params, [1], set(), "cpu")
    # Token 0: 3 - 2 x 0.25 - 0.5 = 2.0 ties token 1 (argmax takes the first of a tie);
    # a stronger frequency penalty moves the argmax to token 1.
    assert int(sampler.pick(logits, output, torch.Generator())) == 0
    params.frequency_penalty = 0.3
    assert int(RowSampler(params, [1], set(), "cpu").pick(logits, output, None)) == 1


def test_min_tokens_holds_back_end_tokens_and_stop_strings(gen, prompts, monkeypatch):
    ids = reference_ids(gen, prompts[0], 8)
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
    monkeypatch.setattr(gen, "eos_ids", {ids[k]})
    [ended] = gen.generate(prompts[:1], [greedy(8)])
    assert (ended.completion_tokens, ended.finish_reason) == (k + 1, "stop")
    [held] = gen.generate(prompts[:1], [greedy(8, min_tokens=k + 2)])
    assert held.completion_tokens > k + 1
    # A stop string in the text of the first min_tokens tokens does not end the row.
    text = gen.tokenizer.decode(ids)
    [not_cut] = gen.generate(prompts[:1], [greedy(8, stop=[text[:2]], min_tokens=8)])
    assert not_cut.completion_tokens == 8


def test_stop_token_ids_end_the_row_unshown_and_ignore_eos_runs_on(gen, prompts, monkeypatch):
    ids = reference_ids(gen, prompts[2], 8)
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
    [stopped] = gen.generate(prompts[2:], [greedy(8, stop_token_ids=[ids[k]])])
    assert stopped.text == gen.tokenizer.decode(ids[:k])
    assert (stopped.completion_tokens, stopped.finish_reason) == (k + 1, "stop")
    monkeypatch.setattr(gen, "eos_ids", {ids[k]})
    [ran_on] = gen.generate(prompts[2:], [greedy(8, ignore_eos=True)])
    assert (ran_on.completion_tokens, ran_on.finish_reason) == (8, "length")


def test_rows_with_different_controls_decode_together_as_alone(gen, prompts):
    """One batch, every row with its own controls (the sampled ones seeded): each row's
    tokens equal its solo run, and the greedy-equivalent ones equal transformers'."""
    mixed = [
        greedy(9),
        greedy(9, repetition_penalty=1.8),
        greedy(9, presence_penalty=2.0, frequency_penalty=0.5),
        greedy(9, logit_bias={7: 5.0, 11: -100.0}),
        SamplingParams(max_tokens=9, temperature=1.0, top_k=1, seed=3),
        SamplingParams(max_tokens=9, temperature=0.9, top_k=20, min_p=0.05, top_p=0.9, seed=4),
        SamplingParams(max_tokens=9, temperature=1.2, repetition_penalty=1.3, seed=8),
    ]
    rows = [prompts[i % len(prompts)] for i in range(len(mixed))]
    together = ids_of(gen, rows, mixed)
    alone = [ids_of(gen, [p], [params])[0] for p, params in zip(rows, mixed)]
    assert together == alone
    assert together[1] == reference_ids(gen, rows[1], 9, repetition_penalty=1.8)
    assert together[4] == reference_ids(gen, rows[4], 9)
    assert len({tuple(t) for t in together}) > 3  # the controls really differ per row


@pytest.mark.parametrize(
    "setting,match",
    [
        (dict(top_k=-2), "top_k=-2"),
        (dict(min_p=1.5), "min_p=1.5"),
        (dict(repetition_penalty=0.0), "repetition_penalty=0.0"),
        (dict(presence_penalty=2.5), "presence_penalty=2.5"),
        (dict(frequency_penalty=-3.0), "frequency_penalty=-3.0"),
        (dict(min_tokens=20), "min_tokens=20"),
    ],
)
def test_sampling_params_bounds(setting, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(max_tokens=16, **setting)
    assert SamplingParams(top_k=-1).top_k == 0  # vLLM's -1 and 0 both mean off
