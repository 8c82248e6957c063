"""/v1/chat/completions: a ChatCompletionRequest -> its messages rendered by the chat
template -> SamplingParams -> the scheduler -> a ChatCompletionResponse, or its stream of
ChatCompletionChunks. `ChatShape` builds the assistant's message, finish reasons, usage and
log-probabilities in the chat shape. No Ray and no HTTP here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from serve.api.generation import Decode
from serve.api.protocol import ChatCompletionRequest, ChatMessage
from serve.api.responses import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    Usage,
    new_id,
)
from serve.api.serving_engine import OpenAIServingGeneration
from serve.generator import Delta
from serve.logprobs import TokenLogprob


class OpenAIServingChat(OpenAIServingGeneration):
    async def create_chat_completion(self, req: ChatCompletionRequest) -> dict | AsyncIterator[str]:
        """The response body, or the SSE events of a stream (``req.stream``)."""
        params = self.sampling_params(req)
        prompt = await self.render_chat([m.model_dump() for m in req.messages])
        prompt_ids = [await self.encode(prompt, params.max_tokens, "messages")]
        adapter = await self.adapter_for(req.model)
        model = req.model if adapter else self.model_name
        shape = ChatShape(req, model, self.tokenizer.decode, self.generator.eos_ids)
        with_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await self.generation.respond(
            prompt_ids, params, shape, req.stream, with_usage, req.n, adapter
        )


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
        """A stream opens with the assistant's role and no content yet, for every choice."""
        choices = [
            ChatChunkChoice(index=i, delta={"role": "assistant", "content": ""}, finish_reason=None)
            for i in range(self.req.n)
        ]
        return ChatCompletionChunk(id=self.id, model=self.model, choices=choices)

    def chunk(
        self, d: Delta | None, usage: Usage | None = None, index: int = 0
    ) -> ChatCompletionChunk:
        if usage is not None:
            return ChatCompletionChunk(id=self.id, model=self.model, choices=[], usage=usage)
        choice = ChatChunkChoice(
            index=index,
            delta={"content": d.text} if d.text else {},
            finish_reason=d.finish_reason,
            logprobs=self._logprobs(d.logprobs),
        )
        return ChatCompletionChunk(id=self.id, model=self.model, choices=[choice])

    def body(self, results: list[dict], usage: Usage) -> ChatCompletionResponse:
        choices = [
            ChatChoice(
                index=i,
                message=ChatMessage(role="assistant", content=r["text"]),
                finish_reason=r["finish_reason"],
                logprobs=self._logprobs(r["logprobs"]),
            )
            for i, r in enumerate(results)
        ]
        return ChatCompletionResponse(id=self.id, model=self.model, choices=choices, usage=usage)
