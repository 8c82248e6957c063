"""The OpenAI-compatible HTTP layer of a replica: routes, request checks, admission, auth,
metrics, and the OpenAI error shape. The model work is below it: `Scheduler` (continuous
batching, serve/scheduler.py) over `Generator` (serve/generator.py); the Serve deployment
options and `build_app` are in serve/deployment.py.

(No `from __future__ import annotations` here: FastAPI must see real `Request` annotations
on the ingress methods, or it takes `request` for a query parameter.)
"""

import asyncio
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.serve import metrics
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.serving import ServeConfig
from serve.generator import Delta, Generator, SamplingParams
from serve.protocol import (
    APIError,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    Usage,
    new_id,
)
from serve.scheduler import Scheduler

# No /docs, /redoc or /openapi.json: the API is OpenAI's, and nothing answers without the key.
api = FastAPI(title="zeroray", docs_url=None, redoc_url=None, openapi_url=None)


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@api.exception_handler(APIError)
async def _api_error(_: Request, err: APIError) -> JSONResponse:
    return _error_response(err)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    # FastAPI answers 422 by default; OpenAI, vLLM and Ray Serve LLM answer 400.
    first = err.errors()[0] if err.errors() else {}
    loc = [str(p) for p in first.get("loc", []) if p != "body"]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        message, param = "request body is not valid JSON", None
    return _error_response(APIError(400, f"{param}: {message}" if param else message, param))


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
    return _error_response(APIError(err.status_code, str(err.detail)))


def bearer_matches(header: str | None, key: str) -> bool:
    """`Authorization: Bearer <key>`, the scheme in any case (RFC 7235), the key compared in
    constant time so that response timing reveals nothing of it."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


@serve.deployment(name="LLMServer")
@serve.ingress(api)
class LLMServer:
    def __init__(self, args: ServeConfig):
        self.args = args
        self.generator = Generator(args.model_dir, dtype=args.dtype, max_context=args.max_context)
        self.model_name = args.model_name or self.generator.model_name
        self.api_key = args.api_key or os.environ.get(args.api_key_env) or None
        self.scheduler = Scheduler(
            self.generator, args.max_batch_size, args.batch_wait_timeout_s, args.stream_interval_s
        )
        self._in_flight = 0
        self._requests = metrics.Counter(
            "zeroray_requests", "requests by route and status", tag_keys=("route", "status")
        )
        self._tokens = metrics.Counter("zeroray_generated_tokens", "completion tokens generated")
        self._ttft = metrics.Histogram(
            "zeroray_time_to_first_token_s",
            "seconds to first token",
            boundaries=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
        )

    # ---- admission, auth and request checks ------------------------------------------------
    def _admit(self) -> None:
        limit = self.args.max_ongoing_requests + self.args.max_queued_requests
        if self._in_flight >= limit:
            raise APIError(
                429,
                f"server busy: {self._in_flight} requests in flight on this "
                f"replica (limit {limit}); retry later",
                code="queue_full",
                headers={"Retry-After": str(self.args.retry_after_s)},
            )

    def _authorize(self, request: Request) -> None:
        if self.api_key and not bearer_matches(request.headers.get("authorization"), self.api_key):
            raise APIError(
                401,
                "missing or invalid API key (send Authorization: Bearer <key>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _parse(self, request: Request, model_cls):
        self._authorize(request)
        # Refuse on the declared length before reading, and on the real one after (a
        # chunked upload declares none).
        declared = int(request.headers.get("content-length") or 0)
        body = b"" if declared > self.args.max_body_bytes else await request.body()
        size = max(declared, len(body))
        if size > self.args.max_body_bytes:
            raise APIError(
                413,
                f"request body of {size} bytes exceeds the limit of "
                f"{self.args.max_body_bytes} bytes",
            )
        try:
            payload = json.loads(body)
        except ValueError:
            raise APIError(400, "request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise APIError(400, "request body must be a JSON object")
        try:
            req = model_cls.model_validate(payload)
        except Exception as e:  # pydantic.ValidationError, rendered like FastAPI's
            raise RequestValidationError(e.errors()) from None
        if req.model != self.model_name:
            raise APIError(
                404,
                f"model {req.model!r} does not exist; available: {self.model_name!r}",
                "model",
                "model_not_found",
            )
        return req

    def _sampling(self, req, max_tokens: int | None) -> SamplingParams:
        """The request's sampling settings, each checked against the API's bounds."""
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
        if not 1 <= max_tokens <= self.args.max_tokens_limit:
            raise APIError(
                400,
                f"max_tokens={max_tokens} must be in [1, {self.args.max_tokens_limit}]",
                "max_tokens",
            )
        return req.to_sampling_params(max_tokens)

    def _encode(self, text: str, max_tokens: int, param: str) -> list[int]:
        ids = self.generator.encode(text)
        if not ids:
            raise APIError(400, f"{param} is empty", param)
        try:
            self.generator.check_request(len(ids), max_tokens)
        except ValueError as e:
            raise APIError(400, str(e), param, "context_length_exceeded") from None
        return ids

    # ---- routes ---------------------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        return {"object": "list", "data": [ModelCard(id=self.model_name).model_dump()]}

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        req = await self._parse(request, CompletionRequest)
        params = self._sampling(req, req.max_tokens)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise APIError(400, "prompt is empty", "prompt")
        if req.stream and len(prompts) > 1:
            raise APIError(400, "stream=true takes a single prompt", "prompt")
        prompt_ids = [self._encode(p, params.max_tokens, "prompt") for p in prompts]
        rid, model = new_id("cmpl"), self.model_name

        def chunk(d: Delta) -> BaseModel:
            choice = CompletionChoice(index=0, text=d.text, finish_reason=d.finish_reason)
            return CompletionChunk(id=rid, model=model, choices=[choice])

        def body(results: list[dict], usage: Usage) -> BaseModel:
            choices = [
                CompletionChoice(index=i, text=r["text"], finish_reason=r["finish_reason"])
                for i, r in enumerate(results)
            ]
            return CompletionResponse(id=rid, model=model, choices=choices, usage=usage)

        return await self._respond("completions", prompt_ids, params, req.stream, chunk, body)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        req = await self._parse(request, ChatCompletionRequest)
        if not req.messages:
            raise APIError(400, "messages is empty", "messages")
        params = self._sampling(req, req.requested_max_tokens)
        prompt = self.generator.apply_chat_template([m.model_dump() for m in req.messages])
        prompt_ids = [self._encode(prompt, params.max_tokens, "messages")]
        rid, model = new_id("chatcmpl"), self.model_name

        def chunk(d: Delta, delta: dict | None = None) -> BaseModel:
            delta = delta if delta is not None else ({"content": d.text} if d.text else {})
            choice = ChatChunkChoice(delta=delta, finish_reason=d.finish_reason if d else None)
            return ChatCompletionChunk(id=rid, model=model, choices=[choice])

        def body(results: list[dict], usage: Usage) -> BaseModel:
            message = ChatMessage(role="assistant", content=results[0]["text"])
            choice = ChatChoice(index=0, message=message, finish_reason=results[0]["finish_reason"])
            return ChatCompletionResponse(id=rid, model=model, choices=[choice], usage=usage)

        first = chunk(None, {"role": "assistant", "content": ""})
        return await self._respond("chat", prompt_ids, params, req.stream, chunk, body, first)

    async def _respond(
        self,
        route: str,
        prompt_ids: list[list[int]],
        params: SamplingParams,
        stream: bool,
        chunk: Callable[[Delta], BaseModel],
        body: Callable[[list[dict], Usage], BaseModel],
        first_chunk: BaseModel | None = None,
    ):
        # Every check is done: from here only the queue can refuse, and it answers before
        # any stream starts, so an error is always a real HTTP status.
        self._admit()
        self._in_flight += len(prompt_ids)
        if stream:
            events = self._sse(route, prompt_ids[0], params, chunk, first_chunk)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            results = await asyncio.gather(*(self._collect(ids, params) for ids in prompt_ids))
        finally:
            self._in_flight -= len(prompt_ids)
        self._requests.inc(tags={"route": route, "status": "200"})
        prompt_tokens = sum(len(ids) for ids in prompt_ids)
        completion_tokens = sum(r["completion_tokens"] for r in results)
        return body(results, Usage.of(prompt_tokens, completion_tokens)).model_dump()

    async def _deltas(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """The scheduler's Deltas for one prompt, with time-to-first-token and token metrics."""
        submitted_s, first = time.perf_counter(), True
        async for delta in self.scheduler.generate(prompt_ids, params):
            if first:
                self._ttft.observe(time.perf_counter() - submitted_s)
                first = False
            if delta.finish_reason:
                self._tokens.inc(delta.token_count)
            yield delta

    async def _collect(self, prompt_ids: list[int], params: SamplingParams) -> dict:
        text, last = [], None
        async for delta in self._deltas(prompt_ids, params):
            text.append(delta.text)
            last = delta
        return {
            "text": "".join(text),
            "finish_reason": last.finish_reason if last else "stop",
            "completion_tokens": last.token_count if last else 0,
        }

    async def _sse(self, route, prompt_ids, params, chunk, first_chunk) -> AsyncIterator[str]:
        try:
            if first_chunk:
                yield f"data: {first_chunk.model_dump_json()}\n\n"
            async for delta in self._deltas(prompt_ids, params):
                if delta.text or delta.finish_reason:
                    yield f"data: {chunk(delta).model_dump_json()}\n\n"
            yield "data: [DONE]\n\n"
            self._requests.inc(tags={"route": route, "status": "200"})
        finally:
            self._in_flight -= 1

    # ---- Serve hooks ----------------------------------------------------------------------
    async def check_health(self) -> None:
        """A real one-token generation: a replica whose model cannot generate is unhealthy."""
        ids = self.generator.encode("ok") or [0]
        await asyncio.to_thread(self.generator.generate, [ids], [SamplingParams(max_tokens=1)])
