"""The OpenAI API's shapes: typed request models (each turns itself into SamplingParams),
typed response and stream-chunk models, and the error shape."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serve.generator import SamplingParams
from serve.logprobs import TokenLogprob

# Fields of the OpenAI API that change what is generated and are not implemented here: a
# request that sets them gets a 400 naming the field, not a silently different answer.
# Fields that change nothing generated (user, stream_options...) are accepted and ignored.
UNSUPPORTED_FIELDS = (
    "logit_bias",
    "best_of",
    "suffix",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
)

# Bounds at the edge of the API, so that nothing a client sends reaches the decode loop in a
# form it cannot handle: torch seeds are 64-bit; a temperature below the floor divides the
# logits into overflow (NaN probabilities), so it is taken as greedy, as vLLM does; OpenAI
# takes up to 4 stop sequences, and a stop string is searched for on every step.
SEED_RANGE = (-(2**63), 2**63 - 1)
GREEDY_BELOW_TEMPERATURE = 1e-5
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 256
MAX_COMPLETION_LOGPROBS = 5  # the legacy completions API's limit
MAX_CHAT_TOP_LOGPROBS = 20  # the chat API's


class StreamOptions(BaseModel):
    include_usage: bool = False  # a last chunk, with no choices, carrying the usage


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)

    model: str
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    def unsupported_field(self) -> str | None:
        """The first field set to something this server would not honour, if any."""
        for name in UNSUPPORTED_FIELDS:
            value = (self.model_extra or {}).get(name)
            if value in (None, False, 0, {}, []) or (name == "best_of" and value == 1):
                continue
            return name
        return None

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

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        """``max_tokens`` already resolved (the request's, or the server's default)."""
        greedy = self.temperature < GREEDY_BELOW_TEMPERATURE
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0 if greedy else self.temperature,
            top_p=self.top_p,
            stop=self.stop_strings(),
            seed=self.seed,
        )


class CompletionRequest(_Request):
    # Text, texts, token ids, or lists of token ids (what lm-eval sends for scoring).
    prompt: str | list[int] | list[list[int]] | list[str]
    echo: bool = False  # the prompt is returned before the completion (its logprobs too)
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        params = super().to_sampling_params(max_tokens)
        params.logprobs = self.logprobs
        params.prompt_logprobs = self.logprobs if self.echo else None
        return params


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None  # newer OpenAI clients send this instead
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs requires logprobs=true", "top_logprobs")
        params = super().to_sampling_params(max_tokens)
        params.logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return params

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class APIError(Exception):
    """Raised anywhere in a request; rendered as {"error": {...}} with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            413: "invalid_request_error",
            422: "invalid_request_error",
            429: "rate_limit_error",
        }.get(self.status, "server_error")

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class _Envelope(BaseModel):
    """What every response and stream chunk carries."""

    id: str
    object: str
    created: int = Field(default_factory=_now)
    model: str


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float | None]  # None for the prompt's first token (nothing before it)
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]  # where each token starts in the choice's text

    @classmethod
    def of(cls, entries: list[TokenLogprob | None], token_text: Callable[[int], str], ids):
        """``entries`` of the tokens ``ids`` (an entry is None for the prompt's first)."""
        tokens, offsets, at = [], [], 0
        for token_id in ids:
            piece = token_text(token_id)
            tokens.append(piece)
            offsets.append(at)
            at += len(piece)
        return cls(
            tokens=tokens,
            token_logprobs=[e.logprob if e else None for e in entries],
            top_logprobs=[{token_text(t): v for t, v in e.top} if e else None for e in entries],
            text_offset=offsets,
        )


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(_Envelope):
    object: str = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(_Envelope):
    object: str = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None  # only on the last chunk, with stream_options.include_usage


class ChatTopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(BaseModel):
    """The chat shape: one entry per content token, with its alternatives."""

    content: list[ChatTokenLogprob]

    @classmethod
    def of(cls, entries: list[TokenLogprob], token_text: Callable[[int], str]):
        def top(token_id: int, logprob: float) -> dict:
            text = token_text(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        return cls(
            content=[
                ChatTokenLogprob(
                    **top(e.token_id, e.logprob),
                    top_logprobs=[ChatTopLogprob(**top(t, v)) for t, v in e.top],
                )
                for e in entries
            ]
        )


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(_Envelope):
    object: str = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: dict  # {"role", "content"} on the first chunk, {"content"} after, {} at the end
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(_Envelope):
    object: str = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None  # only on the last chunk, with stream_options.include_usage


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "zeroray"


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize (lm-eval's remote tokenizer sends the first form)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True  # messages only


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    tokens: list[int]
