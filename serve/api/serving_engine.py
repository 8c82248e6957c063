"""What every serving class shares: the generator's tokenizer behind the API's checks. A
prompt becomes token ids (a text tokenized, off the event loop when long; a client's own ids
checked against the vocabulary) and is refused with a 400 when it is empty or would not fit
the model's context or the batch's token budget; chat messages are rendered by the chat
template. No Ray and no HTTP here."""

from __future__ import annotations

import asyncio

from schemas.serving import ServeConfig
from serve.api.admission import Admission
from serve.api.errors import APIError
from serve.api.generation import Generation
from serve.api.metrics import ServingMetrics
from serve.api.protocol import ServerLimits
from serve.generator import Generator
from serve.scheduler import Scheduler

# Texts longer than this are tokenized (or rendered by the chat template) on a thread, so
# that one big prompt does not stall the event loop; shorter ones cost less than the hop.
OFF_LOOP_CHARS = 4_096


async def off_loop_if_long(chars: int, fn, *args):
    if chars > OFF_LOOP_CHARS:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


class OpenAIServing:
    def __init__(self, generator: Generator, config: ServeConfig) -> None:
        self.generator, self.config = generator, config
        self.tokenizer = generator.tokenizer
        self.model_name = config.model_name or generator.model_name
        # What this server checks requests against while they are parsed (protocol.py).
        self.limits = ServerLimits(
            model_name=self.model_name,
            default_max_tokens=config.default_max_tokens,
            max_tokens_limit=config.max_tokens_limit,
            max_prompts_per_request=config.max_prompts_per_request,
        )

    async def encode(self, text: str | list[int], max_tokens: int, param: str) -> list[int]:
        """Token ids of a text, or a client's own token ids checked against the vocabulary;
        either way within the context and the batch's token budget."""
        if isinstance(text, list):
            ids = self.check_ids(text, param)
        else:
            ids = await off_loop_if_long(len(text), self.generator.encode, text)
            # A tokenizer larger than the model's embedding (a third-party export) can
            # produce ids the model cannot take.
            self.check_ids(ids, param)
        if not ids:
            raise APIError(400, f"{param} is empty", param)
        try:
            self.generator.check_request(len(ids), max_tokens)
        except ValueError as e:
            raise APIError(400, str(e), param, "context_length_exceeded") from None
        budget = self.config.max_batch_tokens
        if len(ids) + max_tokens > budget:
            raise APIError(
                400,
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds this "
                f"replica's batch token budget of {budget} (serve.max_batch_tokens)",
                param,
                "context_length_exceeded",
            )
        return ids

    def check_ids(self, ids: list[int], param: str) -> list[int]:
        """Ids the model can take: below its embedding's row count, whatever the tokenizer's
        length (serve/generator.py)."""
        vocab = self.generator.vocab_rows
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"{param}: token id {bad} is not in [0, {vocab})", param)
        return ids

    async def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        chars = sum(len(m["content"]) for m in messages)
        render = self.generator.apply_chat_template
        try:
            return await off_loop_if_long(chars, render, messages, add_generation_prompt)
        except Exception as e:  # jinja's TemplateError, or a template's raise_exception()
            raise APIError(
                400, f"messages: the chat template refused them ({e})", "messages"
            ) from None


class OpenAIServingGeneration(OpenAIServing):
    """The endpoints that generate (completion, chat): their requests go through admission
    and the scheduler (serve/api/generation.py)."""

    def __init__(
        self,
        generator: Generator,
        scheduler: Scheduler,
        config: ServeConfig,
        admission: Admission,
        metrics: ServingMetrics,
    ) -> None:
        super().__init__(generator, config)
        self.generation = Generation(scheduler, admission, metrics)
