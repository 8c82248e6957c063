"""How a request is sampled: its SamplingParams with their bounds, the generation fields this
server does not implement (refused by serve/api/protocol.py), and one row's logits
processing and its draw, with vLLM's sampling semantics (its v1
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

from dataclasses import dataclass, field

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

# vLLM's bounds on its sampling controls (serve/api/protocol.py refuses what lies outside);
# a logit bias is clamped to OpenAI's [-100, 100].
MAX_PENALTY = 2.0  # presence_penalty and frequency_penalty lie in [-2, 2]
LOGIT_BIAS_LIMIT = 100.0
MAX_LOGIT_BIAS_ENTRIES = 1_024  # each biased token is prepared per row: bound the work
MAX_STOP_TOKEN_IDS = 64

# Fields of the OpenAI API and of vLLM's SamplingParams (and its OpenAI extras) that change
# what is generated and are not implemented here, each with the value that asks for what
# this server does anyway: a request that sets one to anything else gets a 400 naming it,
# never a silently different answer. Fields that change nothing generated (user,
# stream_options, service_tier...) are accepted and ignored. best_of stays refused: vLLM
# dropped it too.
UNSUPPORTED_FIELDS: dict[str, object] = {
    # OpenAI
    "best_of": 1,
    "suffix": None,
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "response_format": None,
    "prediction": None,
    "audio": None,
    "modalities": None,
    "reasoning_effort": None,
    "web_search_options": None,
    # vLLM's SamplingParams and OpenAI extras
    "allowed_token_ids": None,
    "bad_words": None,
    "include_stop_str_in_output": False,
    "skip_special_tokens": True,
    "spaces_between_special_tokens": True,
    "truncate_prompt_tokens": None,
    "logits_processors": None,
    "structured_outputs": None,
    "guided_json": None,
    "guided_regex": None,
    "guided_choice": None,
    "guided_grammar": None,
    "guided_decoding_backend": None,
    "guided_whitespace_pattern": None,
    "use_beam_search": False,
    "length_penalty": 1.0,
    "early_stopping": False,
    "prompt_logprobs": None,
    "return_tokens_as_token_ids": False,
    "detokenize": True,
    "extra_args": None,
    "vllm_xargs": None,
}


@dataclass
class SamplingParams:
    """How one request is sampled and when it stops."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)  # returned text excludes the stop string
    seed: int | None = None  # same seed + prompt + params => same text, whatever the batch
    logprobs: int | None = None  # per new token: its log-prob and the top k; None = none
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (the prefill's)
    # vLLM's controls, applied per row by serve/sampling.py (0 / 1.0 / empty: off).
    top_k: int = 0  # keep the k likeliest tokens; -1 or 0 = off
    min_p: float = 0.0  # drop tokens below min_p x the likeliest one's probability
    repetition_penalty: float = 1.0  # > 1 discourages tokens of the prompt and the output
    presence_penalty: float = 0.0  # [-2, 2], once per token already in the output
    frequency_penalty: float = 0.0  # [-2, 2], per occurrence in the output
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    min_tokens: int = 0  # end tokens and stop strings are held back until this many
    stop_token_ids: list[int] = field(default_factory=list)  # end the row, never shown
    ignore_eos: bool = False  # the model's end tokens do not end the row

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens={self.max_tokens} must be >= 0 (0: score only)")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < -1:
            raise ValueError(f"top_k={self.top_k} must be -1 or 0 (off), or at least 1")
        self.top_k = max(self.top_k, 0)
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p={self.min_p} must be in [0, 1]")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty} must be > 0")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -MAX_PENALTY <= getattr(self, name) <= MAX_PENALTY:
                raise ValueError(f"{name}={getattr(self, name)} must be in [-2, 2]")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens={self.min_tokens} must be in [0, max_tokens]")
        # An empty stop string would match at position 0 and end every request at once.
        self.stop = [s for s in self.stop if s]


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
