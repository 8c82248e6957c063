"""/v1/completions: a CompletionRequest -> SamplingParams -> the scheduler -> a
CompletionResponse, or its stream of CompletionChunks. `CompletionShape` builds the text
(the echoed prompt first, when asked), finish reasons, usage and log-probabilities in the
legacy completions shape. No Ray and no HTTP here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from serve.api.generation import Decode
from serve.api.protocol import CompletionRequest
from serve.api.responses import (
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionResponse,
    Usage,
    new_id,
)
from serve.api.serving_engine import OpenAIServingGeneration
from serve.generator import Delta
from serve.logprobs import TokenLogprob


class OpenAIServingCompletion(OpenAIServingGeneration):
    async def create_completion(self, req: CompletionRequest) -> dict | AsyncIterator[str]:
        """The response body, or the SSE events of a stream (``req.stream``)."""
        params = self.sampling_params(req)
        prompt_ids = [await self.encode(p, params.max_tokens, "prompt") for p in req.prompts]
        adapter = await self.adapter_for(req.model)
        model = req.model if adapter else self.model_name
        shape = CompletionShape(req, model, prompt_ids, self.tokenizer.decode)
        with_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await self.generation.respond(
            prompt_ids, params, shape, req.stream, with_usage, req.n, adapter
        )


class CompletionShape:
    """The responses of one /v1/completions request (``prompt_ids``: one list per prompt).
    Choice i answers prompt i // n (OpenAI's and vLLM's order)."""

    def __init__(self, req: CompletionRequest, model: str, prompt_ids: list, decode: Decode):
        self.req, self.model, self.prompt_ids, self.decode = req, model, prompt_ids, decode
        self.id = new_id("cmpl")
        self.echoed = [decode(ids) if req.echo else "" for ids in prompt_ids]
        # A stream sends the echoed prompt with each choice's first chunk.
        self.echo_unsent = set(range(req.n)) if req.echo else set()

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

    def chunk(self, d: Delta | None, usage: Usage | None = None, index: int = 0) -> CompletionChunk:
        if usage is not None:
            return CompletionChunk(id=self.id, model=self.model, choices=[], usage=usage)
        first = index in self.echo_unsent
        self.echo_unsent.discard(index)
        choice = CompletionChoice(
            index=index,
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
                text=self.echoed[i // self.req.n] + r["text"],
                finish_reason=r["finish_reason"],
                logprobs=self._logprobs(
                    r["logprobs"],
                    r["prompt_logprobs"] if self.req.echo else None,
                    self.prompt_ids[i // self.req.n],
                ),
            )
            for i, r in enumerate(results)
        ]
        return CompletionResponse(id=self.id, model=self.model, choices=choices, usage=usage)

    def first_chunk(self) -> None:
        """A completion stream opens with its first tokens (and the echoed prompt)."""
        return None
