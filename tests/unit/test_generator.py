"""serve.generator on a tiny random GPT-2 export: batching with left padding must not change
what each prompt generates, and every per-row stop condition must act on its row only.
The same holds for continuous batching (serve.running_batch): requests that join a running
batch mid-flight, their KV cache padded and stacked under the others, decode exactly what
they decode alone, and so do the rows they join."""

from __future__ import annotations

import pytest
import torch
from greedy_reference import reference_ids
from transformers import LlamaConfig, LlamaForCausalLM

from serve.export import DEFAULT_CHAT_TEMPLATE
from serve.generator import Completion, Generator, _holdback
from serve.running_batch import RunningBatch
from serve.sampling import SamplingParams


def greedy(max_tokens: int, stop: list[str] | None = None) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop or [])


def run_stream(gen, prompts, params, cancelled=None):
    """All events of a stream, plus each row's concatenated text."""
    steps = list(gen.stream(prompts, params, cancelled))
    texts = ["".join(s[i].text for s in steps if s[i] is not None) for i in range(len(prompts))]
    return steps, texts


def test_loads_export(gen, export_dir):
    assert gen.model_name == "tiny-gpt2"
    assert gen.max_context == 64
    assert gen.model.dtype == torch.float32  # "auto" on a CPU
    assert gen.tokenizer.padding_side == "left"
    assert Generator(export_dir, device="cpu", max_context=32).max_context == 32


def test_greedy_batch_matches_each_prompt_alone(gen, prompts):
    # Rows end at different steps and leave the batch (and its KV cache) while others go on.
    lengths = [4, 10, 7]
    completions = gen.generate(prompts, [greedy(n) for n in lengths])
    for prompt, n, got in zip(prompts, lengths, completions):
        ids = reference_ids(gen, prompt, n)
        assert got.text == gen.tokenizer.decode(ids, skip_special_tokens=True)
        assert got == Completion(got.text, len(prompt), len(ids), "length")


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tiny_tokenizer) -> Generator:
    """A tiny random Llama export (rotary positions, grouped-query KV heads)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        vocab_size=len(tiny_tokenizer),
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        initializer_range=0.3,
    )
    path = tmp_path_factory.mktemp("serve") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return Generator(str(path), device="cpu")


def test_llama_batch_matches_each_prompt_alone(llama, prompts):
    # Llama's rotary positions are relative, so a pad offset is harmless there; this guards
    # the padding mask and the grouped-query KV cache as rows leave the batch.
    completions = llama.generate(prompts, [greedy(n) for n in (8, 3, 6)])
    for prompt, n, got in zip(prompts, (8, 3, 6), completions):
        ids = reference_ids(llama, prompt, n)
        assert got.text == llama.tokenizer.decode(ids, skip_special_tokens=True)
        assert got.completion_tokens == len(ids)


def test_short_row_finishes_with_length_while_long_row_continues(gen, prompts):
    steps, _ = run_stream(gen, prompts[:2], [greedy(3), greedy(9)])
    assert len(steps) == 9
    assert [s[0].token_count for s in steps[:3]] == [1, 2, 3]
    assert [s[0].finish_reason for s in steps[:3]] == [None, None, "length"]
    assert all(s[0] is None for s in steps[3:])
    assert [s[1].token_count for s in steps] == list(range(1, 10))
    assert steps[-1][1].finish_reason == "length"


def test_eos_finishes_with_stop_and_counts_the_eos(gen, prompts, monkeypatch):
    ids = reference_ids(gen, prompts[0], 6)
    # Declare the first token that differs from all before it an end token: the row must
    # stop right there, count it, and not show it.
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
    monkeypatch.setattr(gen, "eos_ids", {ids[k]})
    [got] = gen.generate(prompts[:1], [greedy(6)])
    assert got == Completion(gen.tokenizer.decode(ids[:k]), len(prompts[0]), k + 1, "stop")


def test_stop_string_truncates_and_is_never_streamed(gen, prompts):
    [full] = gen.generate(prompts[2:], [greedy(16)])
    middle = len(full.text) // 2
    stop = full.text[middle : middle + 3]
    expected = full.text[: full.text.find(stop)]
    assert expected  # the stop string is not at the very start

    steps, texts = run_stream(gen, prompts[1:], [greedy(16), greedy(16, ["no such", stop])])
    last = [s[1] for s in steps if s[1] is not None][-1]
    assert texts[1] == expected
    assert last.finish_reason == "stop"
    assert last.token_count < 16
    # The other row does not care about this row's stop strings.
    assert steps[-1][0].finish_reason == "length"


def test_same_seed_same_text_alone_and_in_a_batch(gen, prompts):
    def sampled(seed):
        return SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=seed)

    [alone] = gen.generate(prompts[1:2], [sampled(123)])
    batch = gen.generate(prompts, [sampled(None), sampled(123), sampled(7)])
    assert batch[1].text == alone.text
    [other_seed] = gen.generate(prompts[1:2], [sampled(124)])
    assert other_seed.text != alone.text


def test_stream_deltas_add_up_to_generate(gen, prompts):
    params = [
        SamplingParams(max_tokens=5, temperature=0.0),
        SamplingParams(max_tokens=12, temperature=1.0, seed=1, stop=["e"]),
        SamplingParams(max_tokens=9, temperature=0.7, top_p=0.5, seed=2),
    ]
    steps, texts = run_stream(gen, prompts, params)
    assert texts == [c.text for c in gen.generate(prompts, params)]
    for i in range(len(prompts)):
        deltas = [s[i] for s in steps if s[i] is not None]
        # A row's Deltas are consecutive, counted 1..n, and only the last one is final.
        assert [s[i] is not None for s in steps] == [True] * len(deltas) + [False] * (
            len(steps) - len(deltas)
        )
        assert [d.token_count for d in deltas] == list(range(1, len(deltas) + 1))
        assert [d.finish_reason is not None for d in deltas] == [False] * (len(deltas) - 1) + [True]


def test_cancelled_row_stops_early(gen, prompts):
    consumed = []

    def cancelled(i: int) -> bool:
        return i == 0 and len(consumed) >= 2  # the client of row 0 left after two tokens

    events = []
    for step in gen.stream(prompts[:2], [greedy(8), greedy(8)], cancelled):
        events.append(step)
        consumed.append(step)
    row0 = [s[0] for s in events if s[0] is not None]
    assert [d.finish_reason for d in row0] == [None, None, "stop"]
    assert row0[-1].token_count == 2
    [uncancelled] = gen.generate(prompts[:1], [greedy(8)])
    assert uncancelled.text.startswith("".join(d.text for d in row0))
    assert events[-1][1].token_count == 8 and len(events) == 8
    # Row 1 is unaffected by its neighbour leaving the batch.
    row1 = "".join(s[1].text for s in events)
    assert row1 == gen.tokenizer.decode(reference_ids(gen, prompts[1], 8))


def test_check_request_names_the_numbers(gen, prompts):
    gen.check_request(54, 10)
    with pytest.raises(ValueError, match=r"prompt \(60 tokens\) \+ max_tokens \(10\) = 70.* 64"):
        gen.check_request(60, 10)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        gen.generate(prompts[:1], [greedy(64)])


def test_odd_batches(gen, prompts):
    assert gen.generate([], []) == []
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        gen.generate([prompts[0], []], [greedy(2), greedy(2)])
    with pytest.raises(ValueError, match="2 prompts but 1 SamplingParams"):
        gen.generate(prompts[:2], [greedy(2)])


def test_default_chat_template_ends_with_generation_prompt(gen, monkeypatch):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    # The export has no template of its own: the loader gave it the default one.
    assert gen.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    text = gen.apply_chat_template(messages)
    assert text == "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"
    # A tokenizer's own template wins over the default.
    monkeypatch.setattr(gen.tokenizer, "chat_template", "{{ messages[-1]['content'] }}!")
    assert gen.apply_chat_template(messages) == "Hi!"


def test_holdback_keeps_partial_utf8_and_stop_prefixes():
    assert _holdback("abc", []) == 0
    assert _holdback("ab\ufffd", []) == 1
    assert _holdback("hello wor", ["world"]) == 3
    assert _holdback("hello w", ["world", "xyz", " w"]) == 1
    assert _holdback("hello", ["hello"]) == 0  # whole matches are the stop search's job


def test_sampling_params_are_checked():
    with pytest.raises(ValueError, match="max_tokens=-1"):
        SamplingParams(max_tokens=-1)
    with pytest.raises(ValueError, match="top_p=0"):
        SamplingParams(top_p=0)
    assert SamplingParams(stop=["", "x"]).stop == ["x"]


# --- continuous batching -------------------------------------------------------------


def _texts(gen, events_by_step, keys):
    texts = {k: "" for k in keys}
    finish = {}
    for events in events_by_step:
        for key, delta in events:
            texts[key] += delta.text
            if delta.finish_reason:
                finish[key] = (delta.token_count, delta.finish_reason)
    return texts, finish


def _staggered(gen, prompts, lengths, join_after):
    """Row k joins after join_after[k] steps of the batch; all events, step by step."""
    batch, steps, started = RunningBatch(gen), [], set()
    for step in range(200):
        joining = [k for k, at in enumerate(join_after) if at == step and k not in started]
        if joining:
            started |= set(joining)
            steps.append(
                batch.add(
                    joining, [prompts[k] for k in joining], [greedy(lengths[k]) for k in joining]
                )
            )
        if batch:
            steps.append(batch.step())
        elif len(started) == len(prompts):
            return steps
    raise AssertionError("the batch never emptied")


def _alone(gen, prompt, n):
    """What transformers' own generate() decodes for the prompt alone."""
    return gen.tokenizer.decode(reference_ids(gen, prompt, n), skip_special_tokens=True)


def test_rows_joining_mid_flight_decode_what_they_decode_alone(gen, prompts):
    lengths = [12, 9, 6]
    # Row 0 starts alone; row 1 joins after 3 steps (longer prompt: the running batch is
    # padded to it); row 2 joins after 5 (the longest prompt).
    steps = _staggered(gen, prompts, lengths, [0, 3, 5])
    texts, finish = _texts(gen, steps, range(3))
    for k in range(3):
        assert texts[k] == _alone(gen, prompts[k], lengths[k])
        assert finish[k] == (lengths[k], "length")


def test_a_short_prompt_joining_long_running_rows(gen, prompts):
    # The reverse: the newcomer is the narrower side and gets padded.
    lengths = [5, 14]
    steps = _staggered(gen, [prompts[2], prompts[0]], lengths, [0, 4])
    texts, _ = _texts(gen, steps, range(2))
    assert texts == {0: _alone(gen, prompts[2], 5), 1: _alone(gen, prompts[0], 14)}


def test_padding_of_rows_that_left_is_dropped(gen, prompts):
    batch = RunningBatch(gen)
    batch.add(["long"], [prompts[2]], [greedy(2)])
    batch.add(["short"], [prompts[0]], [greedy(10)])
    wide = batch.mask.shape[1]
    while "long" in batch.keys:
        batch.step()
    # Only the short row is left: no column of the long prompt's width remains.
    assert batch.mask.shape[1] < wide and bool(batch.mask[:, 0].all())
    assert batch.cache.layers[0].keys.shape[-2] == batch.mask.shape[1] - 1


def test_cancelled_key_leaves_between_steps(gen, prompts):
    batch = RunningBatch(gen)
    batch.add(["a", "b"], prompts[:2], [greedy(8), greedy(8)])
    events = batch.step(cancelled=lambda key: key == "a")
    [(key, delta)] = [e for e in events if e[0] == "a"]
    assert delta.finish_reason == "stop" and batch.keys == ["b"]


def test_llama_rows_joining_mid_flight(llama, prompts):
    lengths = [10, 7, 4]
    steps = _staggered(llama, prompts, lengths, [0, 2, 4])
    texts, _ = _texts(llama, steps, range(3))
    assert texts == {k: _alone(llama, prompts[k], lengths[k]) for k in range(3)}


def test_a_row_that_fails_ends_alone_and_its_mates_decode_on(gen, prompts, monkeypatch):
    import serve.generator as generator

    real = generator._sample_row

    def fails_for_seed_7(logits, row):
        if row.params.seed == 7:
            raise RuntimeError("probability tensor contains nan")
        return real(logits, row)

    monkeypatch.setattr(generator, "_sample_row", fails_for_seed_7)
    bad = SamplingParams(max_tokens=6, temperature=1.0, seed=7)
    batch = RunningBatch(gen)
    batch.add(["good"], [prompts[1]], [greedy(10)])
    batch.step()
    events = batch.add(["bad"], [prompts[0]], [bad])  # joins mid-flight, fails at once
    [(key, failure)] = events
    assert key == "bad" and isinstance(failure, RuntimeError)
    assert batch.keys == ["good"]
    texts = [d.text for _, d in batch.step()]
    while batch:
        texts += [d.text for _, d in batch.step()]
    alone = gen.generate([prompts[1]], [greedy(10)])[0].text
    assert alone.endswith("".join(texts)) and len(texts) == 8


def test_a_seed_torch_refuses_fails_its_row_only(gen, prompts):
    # The API bounds seeds to int64; this is the second wall behind that bound.
    steps = list(gen.stream(prompts[:2], [greedy(3), SamplingParams(max_tokens=3, seed=2**70)]))
    assert isinstance(steps[0][1], Exception)
    assert all(s[1] is None for s in steps[1:])
    assert "".join(s[0].text for s in steps) == gen.generate([prompts[0]], [greedy(3)])[0].text
