"""The API's request shapes and every bound on them: typed requests (completions, chat, the
tokenizer's), each checked by its own validator while it is parsed, so that nothing a client
sends reaches the decode loop in a form it cannot handle. A generating request turns itself
into SamplingParams with `to_sampling_params`.

The bounds that depend on the server (its model name, the max_tokens default and limit,
prompts per request) arrive as pydantic's validation context, a `ServerLimits`:
``CompletionRequest.model_validate(payload, context=limits)``. A violated bound raises
`APIError` (400, or 404 for an unknown model) out of validation with its own message and
param; a wrong type is pydantic's own error, which the router renders as a 400. The response
shapes are in serve/api/responses.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from serve.api.errors import APIError
from serve.sampling import (
    LOGIT_BIAS_LIMIT,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_PENALTY,
    MAX_STOP_TOKEN_IDS,
    UNSUPPORTED_FIELDS,
    SamplingParams,
)

# Bounds at the edge of the API: torch seeds are 64-bit; a temperature below the floor
# divides the logits into overflow (NaN probabilities), so it is taken as greedy, as vLLM
# does; OpenAI takes up to 4 stop sequences, and a stop string is searched for on every step.
SEED_RANGE = (-(2**63), 2**63 - 1)
MAX_TEMPERATURE = 2.0
GREEDY_BELOW_TEMPERATURE = 1e-5
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 256
MAX_COMPLETION_LOGPROBS = 5  # the legacy completions API's limit
MAX_CHAT_TOP_LOGPROBS = 20  # the chat API's
NULL_IS_UNSET = (
    "n",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "min_tokens",
    "ignore_eos",
)


@dataclass(frozen=True)
class ServerLimits:
    """What a request is checked against on this server; a request validated without it
    (built by hand) is checked against the fixed bounds only."""

    model_name: str  # the base model's id
    default_max_tokens: int  # max_tokens of a request that gives none
    max_tokens_limit: int
    max_prompts_per_request: int
    # Whether a model id other than the base's names a LoRA adapter (serve/adapters.py).
    is_adapter: Callable[[str], bool] | None = None
    max_prompts_per_request: int  # prompts x n: the rows one request may add
    max_n: int = 1  # most choices per prompt


def _limits(info: ValidationInfo) -> ServerLimits | None:
    return info.context if isinstance(info.context, ServerLimits) else None


def check_model(model: str | None, limits: ServerLimits | None) -> None:
    """404 for a model id this server does not serve (no id at all is taken as ours)."""
    if limits is None or model is None or model == limits.model_name:
        return
    if limits.is_adapter is None or not limits.is_adapter(model):
        raise APIError(
            404,
            f"model {model!r} does not exist; available: {limits.model_name!r}",
            "model",
            "model_not_found",
        )


class StreamOptions(BaseModel):
    include_usage: bool = False  # a last chunk, with no choices, carrying the usage


class _Request(BaseModel):
    """What the two generating endpoints share. Each subclass's `_within_bounds` validator
    lists its checks in the order a request is refused."""

    model_config = ConfigDict(extra="allow", strict=False)

    model: str
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1  # choices per prompt, each its own row of the running batch
    # vLLM's sampling controls (serve/sampling.py applies them per row).
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None  # token ids as strings, as OpenAI sends them
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data):
        """A control sent as null takes its default, as OpenAI and vLLM read it (clients
        that fill every field send null for the ones they leave alone)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in NULL_IS_UNSET)}
        return data

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def scoring(self) -> bool:
        """Only the prompt is scored (echo): max_tokens may be 0."""
        return False

    def max_tokens_or(self, default: int) -> int:
        return default if self.requested_max_tokens is None else self.requested_max_tokens

    def unsupported_field(self) -> str | None:
        """The first field set to something this server would not honour, if any."""
        extra = self.model_extra or {}
        for name, as_here in UNSUPPORTED_FIELDS.items():
            value = extra.get(name)
            if value is None or value == as_here:
                continue
            return name
        return None

    def token_bias(self) -> dict[int, float]:
        """logit_bias with int keys, each value clamped to [-100, 100] (as OpenAI and vLLM
        take it); APIError for a key that is no token id or a value that is no number."""
        bias = self.logit_bias or {}
        if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise APIError(
                400,
                f"logit_bias has {len(bias)} entries; at most {MAX_LOGIT_BIAS_ENTRIES}",
                "logit_bias",
            )
        out = {}
        for key, value in bias.items():
            try:
                token = int(key)
            except ValueError:
                raise APIError(
                    400, f"logit_bias key {key!r} is not a token id", "logit_bias"
                ) from None
            if not math.isfinite(value):
                raise APIError(400, f"logit_bias[{key!r}]={value} is not finite", "logit_bias")
            out[token] = max(-LOGIT_BIAS_LIMIT, min(LOGIT_BIAS_LIMIT, value))
        return out

    def stop_strings(self) -> list[str]:
        """The stop strings, or APIError when there are too many or one is too long."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP_STRINGS:
            raise APIError(400, f"stop has {len(stop)} strings; at most {MAX_STOP_STRINGS}", "stop")
        if any(len(s) > MAX_STOP_CHARS for s in stop):
            raise APIError(
                400, f"stop strings may be at most {MAX_STOP_CHARS} characters long", "stop"
            )
        return stop

    def logprob_counts(self) -> tuple[int | None, int | None]:
        """(top log-probs per new token, per prompt token); None = none asked for."""
        return None, None

    def _check_sampling(self, limits: ServerLimits | None) -> None:
        unsupported = self.unsupported_field()
        if unsupported:
            raise APIError(
                400,
                f"{unsupported} is not supported by this server; leave it unset",
                unsupported,
                "unsupported_parameter",
            )
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise APIError(400, f"temperature={self.temperature} must be in [0, 2]", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise APIError(400, f"top_p={self.top_p} must be in (0, 1]", "top_p")
        self._check_controls(limits)
        if limits is not None:
            max_tokens, low = self.max_tokens_or(limits.default_max_tokens), int(not self.scoring)
            if not low <= max_tokens <= limits.max_tokens_limit:
                also = "" if self.scoring else " (0 only with echo=true)"
                raise APIError(
                    400,
                    f"max_tokens={max_tokens} must be in [{low}, {limits.max_tokens_limit}]{also}",
                    "max_tokens",
                )
        # vLLM: at most max_tokens (the server's default when the request sets none).
        high = (
            self.max_tokens_or(limits.default_max_tokens) if limits else self.requested_max_tokens
        )
        if self.min_tokens < 0 or (high is not None and self.min_tokens > high):
            raise APIError(
                400, f"min_tokens={self.min_tokens} must be in [0, max_tokens]", "min_tokens"
            )
        self.logprob_counts()
        self.stop_strings()
        self.token_bias()

    def _check_controls(self, limits: ServerLimits | None) -> None:
        """vLLM's bounds on its sampling controls, each a 400 naming its field."""
        max_n = limits.max_n if limits is not None else None
        if self.n < 1 or (max_n is not None and self.n > max_n):
            raise APIError(400, f"n={self.n} must be in [1, {max_n or 'inf'}]", "n")
        if self.seed is not None and self.seed + self.n - 1 > SEED_RANGE[1]:
            # Choice j is seeded with seed + j (as vLLM seeds its parallel samples).
            raise APIError(400, f"seed + n - 1 must fit in int64 (seed={self.seed})", "seed")
        if self.top_k < -1:
            raise APIError(400, f"top_k={self.top_k} must be -1 or 0 (off), or at least 1", "top_k")
        if not 0.0 <= self.min_p <= 1.0:
            raise APIError(400, f"min_p={self.min_p} must be in [0, 1]", "min_p")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise APIError(
                400,
                f"repetition_penalty={self.repetition_penalty} must be > 0 (1: off)",
                "repetition_penalty",
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -MAX_PENALTY <= value <= MAX_PENALTY:
                raise APIError(400, f"{name}={value} must be in [-2, 2]", name)
        if len(self.stop_token_ids or []) > MAX_STOP_TOKEN_IDS:
            raise APIError(
                400, f"stop_token_ids holds more than {MAX_STOP_TOKEN_IDS} ids", "stop_token_ids"
            )

    def to_sampling_params(self, default_max_tokens: int) -> SamplingParams:
        """The request's SamplingParams, max_tokens resolved against the server's default.
        The request is already checked: this is the one conversion, with nothing to refuse."""
        logprobs, prompt_logprobs = self.logprob_counts()
        return SamplingParams(
            max_tokens=self.max_tokens_or(default_max_tokens),
            temperature=0.0 if self.temperature < GREEDY_BELOW_TEMPERATURE else self.temperature,
            top_p=self.top_p,
            stop=self.stop_strings(),
            seed=self.seed,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.token_bias(),
            min_tokens=self.min_tokens,
            stop_token_ids=list(self.stop_token_ids or []),
            ignore_eos=self.ignore_eos,
        )


class CompletionRequest(_Request):
    # Text, texts, token ids, or lists of token ids (what lm-eval sends for scoring).
    prompt: str | list[int] | list[list[int]] | list[str]
    echo: bool = False  # the prompt is returned before the completion (its logprobs too)
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)

    @model_validator(mode="after")
    def _within_bounds(self, info: ValidationInfo) -> CompletionRequest:
        limits = _limits(info)
        check_model(self.model, limits)
        self._check_sampling(limits)
        prompts = self.prompts
        if not prompts:
            raise APIError(400, "prompt is empty", "prompt")
        if limits is not None and len(prompts) * self.n > limits.max_prompts_per_request:
            raise APIError(
                400,
                f"prompt holds {len(prompts)} prompts x n={self.n} choices; at most "
                f"{limits.max_prompts_per_request} per request",
                "prompt" if self.n == 1 else "n",
            )
        if self.stream and len(prompts) > 1:
            raise APIError(400, "stream=true takes a single prompt", "prompt")
        return self

    @property
    def prompts(self) -> list[str] | list[list[int]]:
        """The prompts as a list: one text or one list of token ids is a list of one."""
        one = isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int))
        return [self.prompt] if one else self.prompt

    @property
    def scoring(self) -> bool:
        return self.echo

    def logprob_counts(self) -> tuple[int | None, int | None]:
        return self.logprobs, self.logprobs if self.echo else None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None  # newer OpenAI clients send this instead
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _within_bounds(self, info: ValidationInfo) -> ChatCompletionRequest:
        limits = _limits(info)
        check_model(self.model, limits)
        if not self.messages:
            raise APIError(400, "messages is empty", "messages")
        self._check_sampling(limits)
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def logprob_counts(self) -> tuple[int | None, int | None]:
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs requires logprobs=true", "top_logprobs")
        return ((self.top_logprobs or 0) if self.logprobs else None), None
