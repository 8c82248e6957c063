"""Batched text generation from a flat Hugging Face export, with no Ray in sight.

This is the bottom of the serving layers: it only needs torch and transformers, so it can be
tested, profiled and reused on its own. The server's continuous batching (serve/scheduler.py
over serve/running_batch.py) drives it through the public batch primitives below: start rows,
left-pad, one model call, sample, advance; `stream` and `generate` run a static batch with
the same primitives.

One call to `stream` runs one left-padded batch: a single prefill of every prompt, then one
decoding step per token for every unfinished row, reusing the KV cache. Rows finish on their
own (EOS, a stop string, `max_tokens`, or a cancelled client) and leave the batch at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from serve.adapters import peft_forward
from serve.export import load_export
from serve.logprobs import TokenLogprob
from serve.running_batch import RunningBatch
from serve.sampling import RowSampler, SamplingParams


@dataclass
class Delta:
    """One streaming event for one request."""

    text: str  # new text since this request's previous Delta (may be "")
    token_count: int  # completion tokens generated so far
    finish_reason: str | None  # None while running; "stop" or "length" on the last Delta
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of the tokens since the last
    prompt_logprobs: list | None = None  # on a row's first Delta, when asked for


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per new token, when asked


@dataclass
class Row:
    """Decoding state of one request inside a batch (made by `Generator.start_rows`; only the
    generator's methods change it)."""

    params: SamplingParams
    rng: torch.Generator
    sampler: RowSampler | None = None  # its logits processing and draw (serve/sampling.py)
    ids: list[int] = field(default_factory=list)  # generated ids that become text (no EOS)
    count: int = 0  # completion tokens sampled, EOS included
    emitted: int = 0  # characters of text already sent in Deltas
    finish_reason: str | None = None
    error: Exception | None = None  # what ended this row alone (finish_reason "error")
    prompt_logprobs: list | None = None  # scored by the prefill, sent with the first Delta
    adapter: str | None = None  # the LoRA adapter this row decodes through; None = the base
    stops_from: int = 0  # where stop strings are searched in its text (past min_tokens)


class Generator:
    """Loads an export directory once and generates for batches of tokenized prompts."""

    def __init__(
        self,
        model_dir: str,
        dtype: str = "auto",
        device: str | None = None,
        max_context: int | None = None,
    ) -> None:
        export = load_export(model_dir, dtype, device, max_context)
        self.model, self.tokenizer = export.model, export.tokenizer
        self.device, self.dtype = export.device, self.model.dtype
        self.model_name, self.max_context = export.name, export.context_length
        self.eos_ids = _eos_ids(self.model.generation_config.eos_token_id, self.tokenizer)
        # Ids the model can take: its embedding's rows, not len(tokenizer) (a third-party
        # export's may be larger; an id past the rows is a device-side assert on a GPU).
        self.vocab_rows = self.model.get_input_embeddings().weight.shape[0]
        # peft's wrapper once a LoRA adapter is loaded (serve/adapters.py); None = base only.
        self.peft_model = None

    # ---- text helpers -------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def check_request(self, prompt_tokens: int, max_tokens: int) -> None:
        """Refuse up front what would run past the model's positions mid-generation."""
        total = prompt_tokens + max_tokens
        if total > self.max_context:
            raise ValueError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} "
                f"exceeds the model's context of {self.max_context} tokens"
            )

    # ---- generation ---------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[Completion]:
        texts = [""] * len(prompts)
        logprobs: list[list[TokenLogprob]] = [[] for _ in prompts]
        last: list[Delta | None] = [None] * len(prompts)
        for events in self.stream(prompts, params):
            for i, delta in enumerate(events):
                if isinstance(delta, Exception):
                    raise delta
                if delta is not None:
                    texts[i] += delta.text
                    logprobs[i] += delta.logprobs
                    last[i] = delta
        return [
            Completion(text, len(prompt), delta.token_count, delta.finish_reason, row_logprobs)
            for text, prompt, delta, row_logprobs in zip(texts, prompts, last, logprobs)
        ]

    def stream(
        self,
        prompts: list[list[int]],
        params: list[SamplingParams],
        cancelled: Callable[[int], bool] | None = None,
    ) -> Iterator[list[Delta | Exception | None]]:
        """Yields, once per step, one entry per prompt: a Delta for each row still running
        at that step (its last one carries finish_reason), None for rows finished before,
        the exception for a row that failed at that step.
        A static batch; the server's continuous batching drives RunningBatch directly."""
        if not prompts and not params:
            return
        batch = RunningBatch(self)
        events = batch.add(list(range(len(prompts))), prompts, params)
        while True:
            step: list[Delta | Exception | None] = [None] * len(prompts)
            for i, delta in events:
                step[i] = delta
            yield step
            if not batch:
                return
            events = batch.step(cancelled)

    # ---- batch primitives (serve/running_batch.py calls them in this order) -----------------

    def start_rows(
        self,
        prompts: list[list[int]],
        params: list[SamplingParams],
        adapters: list[str | None] | None = None,
    ) -> list[Row]:
        """One Row per prompt, each checked against the context and with its own random
        generator (and its LoRA adapter, when ``adapters`` names one per prompt). A seed
        torch refuses fails that row alone (its first advance reports it)."""
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} SamplingParams")
        adapters = adapters or [None] * len(prompts)
        rows = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            if not prompt:
                raise ValueError(f"prompt {i} is empty; it needs at least one token")
            self.check_request(len(prompt), p.max_tokens)
            # A generator per row makes a seeded row's draws independent of its batch mates.
            rng = torch.Generator(device=self.device)
            row = Row(params=p, rng=rng, adapter=adapters[i])
            try:
                row.sampler = RowSampler(p, prompt, self.eos_ids, self.device)
                if p.seed is None:
                    rng.seed()
                else:
                    rng.manual_seed(p.seed)
            except Exception as e:  # a seed (or a setting) the API let through: this row fails
                row.error = e
            rows.append(row)
        return rows

    def left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask of the prompts, left-padded to the longest."""
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = [[pad] * (width - len(p)) + list(p) for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        return (
            torch.tensor(ids, dtype=torch.long, device=self.device),
            torch.tensor(mask, dtype=torch.long, device=self.device),
        )

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        cache,
        every_position: bool = False,
        adapters: list[str | None] | None = None,
    ):
        """One model call: the whole prompts on the first step, one new token per row after.
        ``adapters``: each row's LoRA adapter (None = the base), applied to that row alone.
        Returns the last position's logits and the cache; with ``every_position`` also every
        position's last hidden state, which serve/logprobs.py turns into logits a slice at a
        time (all at once would be rows x width x vocabulary floats)."""
        if every_position:
            hidden = []
            hook = self.model.base_model.register_forward_hook(
                lambda _module, _args, out: hidden.append(out[0])
            )
            try:
                logits, cache = self.forward(input_ids, mask, cache, adapters=adapters)
            finally:
                hook.remove()
            return logits, cache, hidden[0]
        # Positions count real tokens only, so a left-padded row sees the same positions as it
        # would alone (GPT-2 learns absolute positions, Llama rotates by them). Pads get 0.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        model, per_row = peft_forward(self, adapters, input_ids.shape[0])
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,  # transformers 5.24 renamed past_key_values to cache (and on outputs)
            use_cache=True,
            # Only the last position's logits are needed to sample, even in prefill.
            logits_to_keep=1,
            **per_row,
        )
        return out.logits[:, -1, :].float(), out.cache

    @torch.inference_mode()
    def sample(self, rows: list[Row], logits: torch.Tensor) -> list[int]:
        """One token per row from its logits (``logits`` [rows, vocab]), by its own params
        and generator. A row whose sampling fails gets token 0 and its error, which its next
        `advance` reports: the batch goes on."""
        picks = []
        for pos, row in enumerate(rows):
            try:
                if row.error is None:
                    picks.append(_sample_row(logits[pos : pos + 1], row))
                    continue
            except Exception as e:  # NaN probabilities, say: this row fails, not the batch
                row.error = e
            picks.append(torch.zeros((), dtype=torch.long, device=logits.device))
        return torch.stack(picks).tolist()  # one device sync per step, not one per row

    def advance(self, keys: list, rows: list[Row], tokens: list[int], logprobs) -> list:
        """(key, Delta) per row, or (key, the exception) for a row that failed: that row
        finishes alone (finish_reason "error") and its batch mates go on. ``logprobs``: the
        sampled tokens' TokenLogprob (or None) per row (serve/logprobs.py)."""
        events = []
        for key, row, token, logprob in zip(keys, rows, tokens, logprobs):
            try:
                if row.error is not None:
                    raise row.error
                delta = self._advance_row(row, token)
                if logprob is not None and delta.token_count:
                    delta.logprobs = [logprob]
                if row.prompt_logprobs is not None:
                    delta.prompt_logprobs, row.prompt_logprobs = row.prompt_logprobs, None
                events.append((key, delta))
            except Exception as e:
                row.finish_reason, row.error = "error", e
                events.append((key, e))
        return events

    def cancel(self, row: Row) -> Delta:
        """Ends a row whose client is gone: finish_reason "stop", its held-back text sent."""
        row.finish_reason = "stop"
        return self._delta(row, flush=True)

    def _advance_row(self, row: Row, token: int) -> Delta:
        """Records one sampled token and decides whether the row is done."""
        if row.params.max_tokens == 0:  # scoring only: the prefill was all it wanted
            row.finish_reason = "length"
            return Delta("", 0, "length")
        row.count += 1
        if token in row.sampler.end_ids:
            row.finish_reason = "stop"  # counted as a completion token, never shown as text
        else:
            row.ids.append(token)
        if row.finish_reason is None and row.count >= row.params.max_tokens:
            row.finish_reason = "length"
        # A stop string completed by this very token overrides "length" inside _delta.
        return self._delta(row, flush=row.finish_reason is not None)

    def _delta(self, row: Row, flush: bool) -> Delta:
        """The row's text not yet sent. Decoding all its ids each step lets byte-level and
        sentencepiece tokenizers merge pieces correctly; only the new suffix is emitted."""
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        # Before min_tokens no stop string counts, and text written then never ends the row
        # (vLLM's stop checker starts at min_tokens too).
        stops = row.params.stop if row.count >= row.params.min_tokens else []
        cut = _find_stop(text, stops, row.stops_from)
        if not stops:
            row.stops_from = len(text.rstrip("\ufffd"))
        if cut is not None:
            text, flush = text[:cut], True
            row.finish_reason = "stop"
        # Hold back what may still change: half a UTF-8 character, or the start of a stop
        # string that the next tokens could complete (and that must then never be shown).
        end = len(text) if flush else len(text) - _holdback(text, stops)
        new = text[row.emitted : end] if end > row.emitted else ""
        row.emitted = max(row.emitted, end)
        return Delta(new, row.count, row.finish_reason)


# ---- module-level helpers -------------------------------------------------------------


def _eos_ids(configured, tokenizer) -> set[int]:
    """generation_config may list several end tokens (Llama 3 has two); add the tokenizer's."""
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    return ids


def _sample_row(logits: torch.Tensor, row: Row) -> torch.Tensor:
    """One row's next token from its logits [1, vocab] (serve/sampling.py)."""
    return row.sampler.pick(logits, row.ids, row.rng)


def _find_stop(text: str, stops: list[str], start: int = 0) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _holdback(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` that are not final yet."""
    body = text.rstrip("\ufffd")  # decode() marks an incomplete UTF-8 tail with U+FFFD
    partial = max((_stop_prefix(body, stop) for stop in stops), default=0)
    return len(text) - len(body) + partial


def _stop_prefix(text: str, stop: str) -> int:
    """Length of the longest proper prefix of `stop` that `text` ends with."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
