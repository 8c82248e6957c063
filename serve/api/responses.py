"""The API's response shapes: typed response and stream-chunk models (completions and chat,
with their log-probability shapes), usage counts and the model card. The request shapes and
their bounds are in serve/api/protocol.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from pydantic import BaseModel, Field

from serve.api.protocol import ChatMessage
from serve.logprobs import TokenLogprob


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
    root: str | None = None  # what the model was made from: the base's id, an adapter's name
    parent: str | None = None  # an adapter's base model id; None for the base
    # zeroray's own field: the `make pipeline` lineage of the export served (serve.lineage_id).
    lineage_id: str | None = None
