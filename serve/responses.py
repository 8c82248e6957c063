"""How one request's results become OpenAI responses and stream chunks: the text (with the
echoed prompt), finish reasons, usage and log-probabilities in the legacy completions shape
or the chat shape. No HTTP and no model here: serve/app.py calls ``chunk`` per event of a
stream and ``body`` once for a whole response."""

from __future__ import annotations

from collections.abc import Callable

from serve.generator import Delta
from serve.logprobs import TokenLogprob
from serve.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessage,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
    new_id,
)

Decode = Callable[[list[int]], str]


class CompletionShape:
    """The responses of one /v1/completions request (``prompt_ids``: one list per prompt)."""

    def __init__(self, req: CompletionRequest, model: str, prompt_ids: list, decode: Decode):
        self.req, self.model, self.prompt_ids, self.decode = req, model, prompt_ids, decode
        self.id = new_id("cmpl")
        self.echoed = [decode(ids) if req.echo else "" for ids in prompt_ids]
        self.echo_unsent = req.echo  # a stream sends the echoed prompt with its first chunk

    def _logprobs(
        self, new: list[TokenLogprob], echoed: list | None, prompt: list[int]
    ) -> CompletionLogprobs | None:
        """The new tokens' log-probs, after the prompt's when it is echoed (``echoed``: the
        prompt's entries, None when the prompt is not part of this text)."""
        if self.req.logprobs is None:
            return None
        entries, tokens = list(new), [e.token_id for e in new]
        if echoed is not None:
            entries, tokens = echoed + entries, prompt + tokens
        return CompletionLogprobs.of(entries, lambda t: self.decode([t]), tokens)

    def chunk(self, d: Delta | None, usage: Usage | None = None) -> CompletionChunk:
        if usage is not None:
            return CompletionChunk(id=self.id, model=self.model, choices=[], usage=usage)
        first, self.echo_unsent = self.echo_unsent, False
        choice = CompletionChoice(
            index=0,
            text=(self.echoed[0] if first else "") + d.text,
            finish_reason=d.finish_reason,
            logprobs=self._logprobs(
                d.logprobs, d.prompt_logprobs if first else None, self.prompt_ids[0]
            ),
        )
        return CompletionChunk(id=self.id, model=self.model, choices=[choice])

    def body(self, results: list[dict], usage: Usage) -> CompletionResponse:
        choices = [
            CompletionChoice(
                index=i,
                text=self.echoed[i] + r["text"],
                finish_reason=r["finish_reason"],
                logprobs=self._logprobs(
                    r["logprobs"],
                    r["prompt_logprobs"] if self.req.echo else None,
                    self.prompt_ids[i],
                ),
            )
            for i, r in enumerate(results)
        ]
        return CompletionResponse(id=self.id, model=self.model, choices=choices, usage=usage)


class ChatShape:
    """The responses of one /v1/chat/completions request."""

    def __init__(self, req: ChatCompletionRequest, model: str, decode: Decode, eos_ids: set):
        self.req, self.model, self.decode, self.eos_ids = req, model, decode, eos_ids
        self.id = new_id("chatcmpl")

    def _logprobs(self, entries: list[TokenLogprob]) -> ChatLogprobs | None:
        if not self.req.logprobs:
            return None
        # Content tokens only: the end-of-sequence token is no part of the message.
        content = [e for e in entries if e.token_id not in self.eos_ids]
        return ChatLogprobs.of(content, lambda t: self.decode([t]))

    def first_chunk(self) -> ChatCompletionChunk:
        """A stream opens with the assistant's role and no content yet."""
        choice = ChatChunkChoice(delta={"role": "assistant", "content": ""}, finish_reason=None)
        return ChatCompletionChunk(id=self.id, model=self.model, choices=[choice])

    def chunk(self, d: Delta | None, usage: Usage | None = None) -> ChatCompletionChunk:
        if usage is not None:
            return ChatCompletionChunk(id=self.id, model=self.model, choices=[], usage=usage)
        choice = ChatChunkChoice(
            delta={"content": d.text} if d.text else {},
            finish_reason=d.finish_reason,
            logprobs=self._logprobs(d.logprobs),
        )
        return ChatCompletionChunk(id=self.id, model=self.model, choices=[choice])

    def body(self, results: list[dict], usage: Usage) -> ChatCompletionResponse:
        choice = ChatChoice(
            index=0,
            message=ChatMessage(role="assistant", content=results[0]["text"]),
            finish_reason=results[0]["finish_reason"],
            logprobs=self._logprobs(results[0]["logprobs"]),
        )
        return ChatCompletionResponse(id=self.id, model=self.model, choices=[choice], usage=usage)
