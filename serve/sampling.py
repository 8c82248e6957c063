"""One row's logits processing and its draw, with vLLM's sampling semantics (its v1
`Sampler`): first what can change even a greedy pick (min_tokens, logit_bias), then the
penalties (repetition over prompt and output, frequency and presence over the output), then,
for a sampled row only, temperature, min_p, top_k and top_p, and one draw from the row's own
torch.Generator.

Each step is a transformers logits processor where transformers has one, built once per row
from its SamplingParams and called on that row's logits alone, so rows with different
settings decode in one batch and a seeded row draws the same tokens whatever its batch mates.
Presence and frequency penalties (OpenAI's definition) have no transformers processor: they
are the few lines of `_penalize_output`. A row that sets nothing runs no processor at all.
No Ray and no model here: serve/generator.py calls `RowSampler.pick` per row and step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

if TYPE_CHECKING:
    from serve.generator import SamplingParams


class RowSampler:
    """The logits processors of one row and its draw (``prompt``: the row's prompt ids, which
    the repetition penalty counts and min_tokens skips)."""

    def __init__(self, params: SamplingParams, prompt: list[int], eos_ids: set[int], device):
        self.params, self.prompt, self.device = params, list(prompt), device
        # The ids that end this row: the model's end tokens (unless ignore_eos) and the
        # request's stop_token_ids. min_tokens holds all of them back.
        self.end_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else eos_ids)
        # vLLM applies these to every row, greedy ones included (they can move the argmax).
        self.shaping = LogitsProcessorList()
        if params.min_tokens and self.end_ids:
            self.shaping.append(
                MinNewTokensLengthLogitsProcessor(
                    len(self.prompt), params.min_tokens, sorted(self.end_ids), device
                )
            )
        if params.logit_bias:
            bias = [[[token], float(value)] for token, value in params.logit_bias.items()]
            self.shaping.append(SequenceBiasLogitsProcessor(bias))
        if params.repetition_penalty != 1.0:
            self.shaping.append(RepetitionPenaltyLogitsProcessor(float(params.repetition_penalty)))
        self.penalizes_output = bool(params.presence_penalty or params.frequency_penalty)
        # Only for sampled rows, in vLLM's order: temperature, min_p, top_k, top_p.
        self.warpers = LogitsProcessorList()
        if params.temperature > 0:
            if params.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(float(params.temperature)))
            if params.min_p > 0:
                self.warpers.append(MinPLogitsWarper(float(params.min_p)))
            if params.top_k > 0:
                self.warpers.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(float(params.top_p)))

    def pick(self, logits: torch.Tensor, output: list[int], rng: torch.Generator) -> torch.Tensor:
        """The next token (a 0-d tensor) from this row's ``logits`` [1, vocab], given the
        ``output`` ids it generated so far."""
        if self.shaping:
            ids = torch.tensor([self.prompt + output], dtype=torch.long, device=self.device)
            logits = self.shaping(ids, logits)
        if self.penalizes_output and output:
            logits = _penalize_output(logits, output, self.params)
        if self.params.temperature == 0:
            return logits[0].argmax()
        if self.warpers:
            # The warpers read no ids: none of them looks at the sequence.
            logits = self.warpers(None, logits)
        probs = torch.softmax(logits[0], dim=-1)
        return torch.multinomial(probs, 1, generator=rng)[0]


def _penalize_output(logits: torch.Tensor, output: list[int], params) -> torch.Tensor:
    """OpenAI's frequency and presence penalties (as vLLM applies them): each token already
    generated loses ``frequency_penalty`` per occurrence plus ``presence_penalty`` once."""
    vocab = logits.shape[-1]
    counts = torch.bincount(torch.tensor(output, device=logits.device), minlength=vocab)[:vocab]
    counts = counts.to(logits.dtype)
    return logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
