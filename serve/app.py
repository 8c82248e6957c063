"""The OpenAI-compatible HTTP layer of a replica: routes, request checks, admission, auth and
metrics (the FastAPI app and its error shape are in serve/fastapi_app.py, the responses' and
stream chunks' shaping in serve/responses.py). The model work is below it: `Scheduler` (continuous
batching, serve/scheduler.py) over `Generator` (serve/generator.py); the Serve deployment
options and `build_app` are in serve/deployment.py.

(No `from __future__ import annotations` here: FastAPI must see real `Request` annotations
on the ingress methods, or it takes `request` for a query parameter.)
"""

import asyncio
import json
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.serve import metrics

from schemas.serving import ServeConfig
from serve.admission import Admission
from serve.fastapi_app import api, generation_failed
from serve.generator import Delta, Generator, SamplingParams
from serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ModelCard,
    TokenizeRequest,
    Usage,
)
from serve.request_checks import bearer_matches, check_payload, counted
from serve.responses import ChatShape, CompletionShape
from serve.scheduler import Job, Scheduler

# Texts longer than this are tokenized (or rendered by the chat template) on a thread, so
# that one big prompt does not stall the event loop; shorter ones cost less than the hop.
OFF_LOOP_CHARS = 4_096


@serve.deployment(name="LLMServer")
@serve.ingress(api)
class LLMServer:
    def __init__(self, args: ServeConfig):
        self.args = args
        self.generator = Generator(args.model_dir, dtype=args.dtype, max_context=args.max_context)
        self.model_name = args.model_name or self.generator.model_name
        self.api_key = args.api_key or os.environ.get(args.api_key_env) or None
        self.scheduler = Scheduler(
            self.generator,
            args.max_batch_size,
            args.batch_wait_timeout_s,
            args.stream_interval_s,
            args.max_batch_tokens,
        )
        self._requests = metrics.Counter(
            "zeroray_requests", "requests by route and status", tag_keys=("route", "status")
        )
        self._tokens = metrics.Counter("zeroray_generated_tokens", "completion tokens generated")
        self._ttft = metrics.Histogram(
            "zeroray_time_to_first_token_s",
            "seconds to first token",
            boundaries=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
        )
        in_flight = metrics.Gauge("zeroray_in_flight", "prompts admitted and not finished")
        self.admission = Admission(
            max_prompts=args.max_ongoing_requests + args.max_queued_requests,
            max_tokens=args.max_admitted_tokens,
            retry_after_s=args.retry_after_s,
            on_change=in_flight.set,
        )

    def _count(self, route: str, status: int | str) -> None:
        self._requests.inc(tags={"route": route, "status": str(status)})

    # ---- auth and request checks ----------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if self.api_key and not bearer_matches(request.headers.get("authorization"), self.api_key):
            raise APIError(
                401,
                "missing or invalid API key (send Authorization: Bearer <key>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _read_body(self, request: Request) -> bytes:
        """The body, read chunk by chunk and refused as soon as it passes the limit: a
        chunked upload declares no length, and none is ever held whole beyond the limit."""
        limit = self.args.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parse(self, request: Request, model_cls):
        self._authorize(request)
        body = await self._read_body(request)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise APIError(400, "request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise APIError(400, "request body must be a JSON object")
        check_payload(payload)
        try:
            req = model_cls.model_validate(payload)
        except Exception as e:  # pydantic.ValidationError, rendered like FastAPI's
            raise RequestValidationError(e.errors()) from None
        if req.model is not None and req.model != self.model_name:
            raise APIError(
                404,
                f"model {req.model!r} does not exist; available: {self.model_name!r}",
                "model",
                "model_not_found",
            )
        return req

    def _sampling(self, req, max_tokens: int | None, scoring: bool = False) -> SamplingParams:
        """The request's sampling settings, each checked against the API's bounds.
        ``scoring`` (echo): max_tokens may be 0, the prompt is only scored."""
        unsupported = req.unsupported_field()
        if unsupported:
            raise APIError(
                400,
                f"{unsupported} is not supported by this server; leave it unset",
                unsupported,
                "unsupported_parameter",
            )
        if not 0.0 <= req.temperature <= 2.0:
            raise APIError(400, f"temperature={req.temperature} must be in [0, 2]", "temperature")
        if not 0.0 < req.top_p <= 1.0:
            raise APIError(400, f"top_p={req.top_p} must be in (0, 1]", "top_p")
        if req.n != 1:
            raise APIError(400, f"n={req.n}: only n=1 is supported", "n")
        max_tokens = self.args.default_max_tokens if max_tokens is None else max_tokens
        low = 0 if scoring else 1
        if not low <= max_tokens <= self.args.max_tokens_limit:
            also = "" if scoring else " (0 only with echo=true)"
            raise APIError(
                400,
                f"max_tokens={max_tokens} must be in [{low}, {self.args.max_tokens_limit}]{also}",
                "max_tokens",
            )
        return req.to_sampling_params(max_tokens)

    async def _off_loop_if_long(self, chars: int, fn, *args):
        if chars > OFF_LOOP_CHARS:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def _encode(self, text: str | list[int], max_tokens: int, param: str) -> list[int]:
        """Token ids of a text, or a client's own token ids checked against the vocabulary;
        either way within the context and the batch's token budget."""
        if isinstance(text, list):
            ids = self._check_ids(text, param)
        else:
            ids = await self._off_loop_if_long(len(text), self.generator.encode, text)
        if not ids:
            raise APIError(400, f"{param} is empty", param)
        try:
            self.generator.check_request(len(ids), max_tokens)
        except ValueError as e:
            raise APIError(400, str(e), param, "context_length_exceeded") from None
        budget = self.args.max_batch_tokens
        if len(ids) + max_tokens > budget:
            raise APIError(
                400,
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds this "
                f"replica's batch token budget of {budget} (serve.max_batch_tokens)",
                param,
                "context_length_exceeded",
            )
        return ids

    def _check_ids(self, ids: list[int], param: str) -> list[int]:
        vocab = len(self.generator.tokenizer)
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"{param}: token id {bad} is not in [0, {vocab})", param)
        return ids

    async def _render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        chars = sum(len(m["content"]) for m in messages)
        render = self.generator.apply_chat_template
        try:
            return await self._off_loop_if_long(chars, render, messages, add_generation_prompt)
        except Exception as e:  # jinja's TemplateError, or a template's raise_exception()
            raise APIError(
                400, f"messages: the chat template refused them ({e})", "messages"
            ) from None

    # ---- routes ---------------------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "in_flight": self.admission.prompts}

    @api.get("/v1/models")
    @counted("models")
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        return {"object": "list", "data": [ModelCard(id=self.model_name).model_dump()]}

    # The tokenizer, as vLLM serves it (lm-eval's remote tokenizer reads these three).
    @api.post("/tokenize")
    @counted("tokenize")
    async def tokenize(self, request: Request) -> dict:
        req = await self._parse(request, TokenizeRequest)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "give one of prompt and messages", "prompt")
        if req.messages is not None:
            messages = [m.model_dump() for m in req.messages]
            text = await self._render_chat(messages, req.add_generation_prompt)
            special = False  # the template has written its special tokens as text already
        else:
            text, special = req.prompt, req.add_special_tokens
        tokenizer = self.generator.tokenizer
        ids = await self._off_loop_if_long(
            len(text), lambda: tokenizer.encode(text, add_special_tokens=special)
        )
        return {"count": len(ids), "max_model_len": self.generator.max_context, "tokens": ids}

    @api.post("/detokenize")
    @counted("detokenize")
    async def detokenize(self, request: Request) -> dict:
        req = await self._parse(request, DetokenizeRequest)
        return {"prompt": self.generator.tokenizer.decode(self._check_ids(req.tokens, "tokens"))}

    @api.get("/tokenizer_info")
    @counted("tokenizer_info")
    async def tokenizer_info(self, request: Request) -> dict:
        self._authorize(request)
        tokenizer = self.generator.tokenizer
        return {
            "tokenizer_class": type(tokenizer).__name__,
            "eos_token": tokenizer.eos_token,
            "bos_token": tokenizer.bos_token,
            "pad_token": tokenizer.pad_token,
            "unk_token": tokenizer.unk_token,
            "chat_template": tokenizer.chat_template,
            "model_max_length": self.generator.max_context,
            "vocab_size": len(tokenizer),
        }

    @api.post("/v1/completions")
    @counted("completions")
    async def completions(self, request: Request):
        req = await self._parse(request, CompletionRequest)
        params = self._sampling(req, req.max_tokens, scoring=req.echo)
        one = isinstance(req.prompt, str) or (req.prompt and isinstance(req.prompt[0], int))
        prompts = [req.prompt] if one else req.prompt
        if not prompts:
            raise APIError(400, "prompt is empty", "prompt")
        if len(prompts) > self.args.max_prompts_per_request:
            raise APIError(
                400,
                f"prompt holds {len(prompts)} prompts; at most "
                f"{self.args.max_prompts_per_request} per request",
                "prompt",
            )
        if req.stream and len(prompts) > 1:
            raise APIError(400, "stream=true takes a single prompt", "prompt")
        prompt_ids = [await self._encode(p, params.max_tokens, "prompt") for p in prompts]
        tokenizer = self.generator.tokenizer
        shape = CompletionShape(req, self.model_name, prompt_ids, tokenizer.decode)
        return await self._respond(prompt_ids, params, req, shape.chunk, shape.body)

    @api.post("/v1/chat/completions")
    @counted("chat")
    async def chat_completions(self, request: Request):
        req = await self._parse(request, ChatCompletionRequest)
        if not req.messages:
            raise APIError(400, "messages is empty", "messages")
        params = self._sampling(req, req.requested_max_tokens)
        prompt = await self._render_chat([m.model_dump() for m in req.messages])
        prompt_ids = [await self._encode(prompt, params.max_tokens, "messages")]
        shape = ChatShape(
            req, self.model_name, self.generator.tokenizer.decode, self.generator.eos_ids
        )
        return await self._respond(
            prompt_ids, params, req, shape.chunk, shape.body, shape.first_chunk()
        )

    async def _respond(
        self,
        prompt_ids: list[list[int]],
        params: SamplingParams,
        req,
        chunk: Callable[..., BaseModel],
        body: Callable[[list[dict], Usage], BaseModel],
        first_chunk: BaseModel | None = None,
    ):
        # Every check is done: from here only admission can refuse, and it answers before
        # any stream starts, so an error is always a real HTTP status. The jobs own the
        # admission slots from here on: the scheduler releases each when its job ends.
        releases = self.admission.admit([len(ids) + params.max_tokens for ids in prompt_ids])
        jobs = [
            self.scheduler.submit(ids, params, release)
            for ids, release in zip(prompt_ids, releases)
        ]
        if req.stream:
            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = self._sse(jobs[0], chunk, first_chunk, with_usage)
            # A client gone before the first byte never starts the stream, so its finally
            # never runs: dropping the stream unread cancels the job all the same.
            weakref.finalize(events, jobs[0].cancel)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            results = await asyncio.gather(*(self._collect(job) for job in jobs))
        except Exception as e:
            for job in jobs:
                job.cancel()
            raise generation_failed(e) from None
        prompt_tokens = sum(len(ids) for ids in prompt_ids)
        completion_tokens = sum(r["completion_tokens"] for r in results)
        return body(results, Usage.of(prompt_tokens, completion_tokens)).model_dump()

    async def _deltas(self, job: Job) -> AsyncIterator[Delta]:
        """The scheduler's Deltas for one job, with time-to-first-token and token metrics."""
        submitted_s, first = time.perf_counter(), True
        async for delta in self.scheduler.events(job):
            if first:
                self._ttft.observe(time.perf_counter() - submitted_s)
                first = False
            if delta.finish_reason and delta.token_count:  # scoring only generates none
                self._tokens.inc(delta.token_count)
            yield delta

    async def _collect(self, job: Job) -> dict:
        text, last, logprobs, prompt_logprobs = [], None, [], None
        async for delta in self._deltas(job):
            text.append(delta.text)
            logprobs += delta.logprobs
            if delta.prompt_logprobs is not None:
                prompt_logprobs = delta.prompt_logprobs
            last = delta
        return {
            "text": "".join(text),
            "finish_reason": last.finish_reason if last else "stop",
            "completion_tokens": last.token_count if last else 0,
            "logprobs": logprobs,
            "prompt_logprobs": prompt_logprobs,
        }

    async def _sse(self, job: Job, chunk, first_chunk, with_usage: bool) -> AsyncIterator[str]:
        try:
            if first_chunk:
                yield f"data: {first_chunk.model_dump_json()}\n\n"
            async for delta in self._deltas(job):
                if delta.text or delta.finish_reason or delta.logprobs or delta.prompt_logprobs:
                    yield f"data: {chunk(delta).model_dump_json()}\n\n"
                if delta.finish_reason and with_usage:
                    usage = Usage.of(len(job.prompt_ids), delta.token_count)
                    yield f"data: {chunk(None, usage).model_dump_json()}\n\n"
        except Exception as e:
            # The status line is gone already: the failure is the stream's last event, in
            # the OpenAI error shape (the openai client raises it as an APIError).
            self._count("stream", "stream_error")
            yield f"data: {json.dumps(generation_failed(e).body())}\n\n"
        finally:
            job.cancel()
        yield "data: [DONE]\n\n"

    # ---- Serve hooks ----------------------------------------------------------------------
    async def check_health(self) -> None:
        """A real one-token generation: a replica whose model cannot generate is unhealthy."""
        ids = self.generator.encode("ok") or [0]
        await asyncio.to_thread(self.generator.generate, [ids], [SamplingParams(max_tokens=1)])
