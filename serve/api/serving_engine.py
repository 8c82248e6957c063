"""What every serving class shares: the generator's tokenizer behind the API's checks. A
prompt becomes token ids (a text tokenized, off the event loop when long; a client's own ids
checked against the vocabulary) and is refused with a 400 when it is empty or would not fit
the model's context or the batch's token budget; chat messages are rendered by the chat
template. No Ray and no HTTP here."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from schemas.serving import ServeConfig
from serve.adapters import AdapterNotFound, AdapterRefused, Adapters
from serve.api.admission import Admission
from serve.api.errors import APIError
from serve.api.generation import Generation
from serve.api.metrics import ServingMetrics
from serve.api.protocol import ServerLimits
from serve.generator import Generator
from serve.sampling import SamplingParams
from serve.scheduler import Scheduler

# Texts longer than this are tokenized (or rendered by the chat template) on a thread, so
# that one big prompt does not stall the event loop; shorter ones cost less than the hop.
OFF_LOOP_CHARS = 4_096


# What rendering a chat message costs beyond its characters, counted as characters: many
# short messages render as slowly as one long one.
CHARS_PER_MESSAGE = 64


# Large texts are tokenized one at a time on a thread of their own: many tokenizing threads
# at once starve the decode thread of the GIL (a stream beside 20 of them stalled for 39 s).
_TOKENIZER_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zeroray-tokenize")


async def off_loop_if(large: bool, fn, *args):
    """``fn(*args)`` on the tokenizing thread when ``large`` (the event loop keeps answering
    meanwhile), else here: a thread hop costs more than small work."""
    if large:
        return await asyncio.get_running_loop().run_in_executor(_TOKENIZER_THREAD, fn, *args)
    return fn(*args)


async def off_loop_if_long(chars: int, fn, *args):
    return await off_loop_if(chars > OFF_LOOP_CHARS, fn, *args)


# A text longer than this many characters per token the server could take is tokenized by
# its head first: when the head alone holds too many tokens the text is refused without
# tokenizing the rest (a megabyte of text costs the CPU seconds to tokenize).
PROBE_CHARS_PER_TOKEN = 4


async def encode_within(
    encode, text: str, limit: int, param: str, what: str = "the model's context"
) -> list[int]:
    """``encode(text)`` when it yields at most ``limit`` ids; else a 400 naming the limit."""
    probe = limit * PROBE_CHARS_PER_TOKEN
    if len(text) > probe:
        head = await off_loop_if_long(probe, encode, text[:probe])
        # + 1: the token cut at the head's edge may merge with the next one in the whole.
        if len(head) > limit + 1:
            raise APIError(
                400,
                f"{param} holds more than {limit} tokens, {what}",
                param,
                "context_length_exceeded",
            )
    ids = await off_loop_if_long(len(text), encode, text)
    if len(ids) > limit:
        raise APIError(
            400,
            f"{param} holds {len(ids)} tokens, more than {what} ({limit})",
            param,
            "context_length_exceeded",
        )
    return ids


class OpenAIServing:
    def __init__(
        self, generator: Generator, config: ServeConfig, adapters: Adapters | None = None
    ) -> None:
        self.generator, self.config, self.adapters = generator, config, adapters
        self.tokenizer = generator.tokenizer
        self.model_name = config.model_name or generator.model_name
        # What this server checks requests against while they are parsed (protocol.py).
        self.limits = ServerLimits(
            model_name=self.model_name,
            default_max_tokens=config.default_max_tokens,
            max_tokens_limit=config.max_tokens_limit,
            max_prompts_per_request=config.max_prompts_per_request,
            is_adapter=adapters.knows if adapters is not None else None,
            max_n=config.max_n,
        )

    async def encode(self, text: str | list[int], max_tokens: int, param: str) -> list[int]:
        """Token ids of a text, or a client's own token ids checked against the vocabulary;
        either way within the context and the batch's token budget."""
        if isinstance(text, list):
            ids = self.check_ids(text, param)
        else:
            context = self.generator.max_context
            ids = await encode_within(self.generator.encode, text, context, param)
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

    def sampling_params(self, req) -> SamplingParams:
        """A checked request's SamplingParams, its token ids (logit_bias, stop_token_ids)
        checked against the vocabulary as a prompt's are."""
        params = req.to_sampling_params(self.config.default_max_tokens)
        self.check_ids(list(params.logit_bias), "logit_bias")
        self.check_ids(params.stop_token_ids, "stop_token_ids")
        return params

    async def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        chars = sum(len(m["content"]) + CHARS_PER_MESSAGE for m in messages)
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
        adapters: Adapters | None = None,
    ) -> None:
        super().__init__(generator, config, adapters)
        self.scheduler = scheduler
        self.generation = Generation(scheduler, admission, metrics)

    async def adapter_for(self, model: str) -> str | None:
        """The LoRA adapter a request's model id names (None: the base), loaded from the
        scanned folder between two decode rounds when it is not held yet."""
        if self.adapters is None:
            return None
        try:
            name = self.adapters.adapter_of(model)
            if name is not None:
                # Held already: marked recently used, with no await before the job is queued
                # (an eviction could otherwise take it in between).
                if name in self.adapters.paths:
                    self.adapters.paths.move_to_end(name)
                else:
                    await self.scheduler.run_between_rounds(self.adapters.ensure, name)
        except AdapterNotFound as e:
            raise APIError(404, str(e), "model", "model_not_found") from None
        except AdapterRefused as e:
            raise APIError(400, str(e), "model") from None
        return name
