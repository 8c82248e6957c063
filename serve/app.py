"""The OpenAI-compatible HTTP API as a Ray Serve deployment, and `build_app(args)`.

(No `from __future__ import annotations` here: FastAPI must see real `Request` annotations
on the ingress methods, or it takes `request` for a query parameter.)

Three layers: `Generator` and `RunningBatch` (plain classes, serve/generator.py and
serve/running_batch.py) do the model work; the `LLMServer` deployment below adds continuous
batching (one decode loop that requests join between steps), streaming, admission control,
auth and metrics; `build_app` turns typed or dict args into a Serve application
(`serve run serve.app:build_app model_dir=...` or a Serve config file's `import_path`).
"""

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve import metrics
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.config import ServeArgs, ServeConfigError
from serve.generator import Delta, Generator, SamplingParams
from serve.running_batch import RunningBatch
from serve.schemas import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    chat_body,
    chat_chunk,
    completion_body,
    completion_chunk,
    new_id,
    usage,
)

api = FastAPI(title="zeroray", docs_url=None, redoc_url=None)


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


@dataclass(eq=False)  # compared and hashed by identity: a job is a key of the running batch
class _Job:
    """One prompt waiting for, or riding in, the running batch."""

    prompt_ids: list[int]
    params: SamplingParams
    cancelled: bool = False
    submitted_s: float = field(default_factory=time.perf_counter)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # Deltas, or an exception


def _merge(a: Delta | None, b: Delta | None) -> Delta | None:
    """Two consecutive events of one row as one (None = the row had finished already)."""
    if a is None or b is None:
        return a or b
    return Delta(a.text + b.text, b.token_count, b.finish_reason)


def _merge_events(merged: dict, events: list) -> None:
    for job, delta in events:
        merged[job] = _merge(merged.get(job), delta)


def _sampling(req, max_tokens: int) -> SamplingParams:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=stop,
        seed=req.seed,
    )


@serve.deployment(name="LLMServer")
@serve.ingress(api)
class LLMServer:
    def __init__(self, args: ServeArgs):
        self.args = args
        self.generator = Generator(args.model_dir, dtype=args.dtype, max_context=args.max_context)
        self.model_name = args.model_name or self.generator.model_name
        self.api_key = args.api_key or os.environ.get(args.api_key_env) or None
        self._batch = RunningBatch(self.generator)  # touched only by the decode thread
        self._waiting: list[_Job] = []
        self._decoder: asyncio.Task | None = None
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

    # ---- continuous batching: one decode loop, requests join it between steps ------------
    async def _run(self, job: _Job) -> AsyncIterator[Delta]:
        """This job's deltas; leaving early (a disconnect) marks it cancelled, and the decode
        loop drops it before its next step."""
        self._waiting.append(job)
        if self._decoder is None or self._decoder.done():
            self._decoder = asyncio.get_running_loop().create_task(self._decode_loop())
        first = True
        try:
            while True:
                delta = await job.events.get()
                if isinstance(delta, BaseException):
                    raise delta
                if first:
                    self._ttft.observe(time.perf_counter() - job.submitted_s)
                    first = False
                yield delta
                if delta.finish_reason:
                    self._tokens.inc(delta.token_count)
                    return
        finally:
            job.cancelled = True

    async def _decode_loop(self) -> None:
        """Runs while anything is waiting or decoding. Each round admits waiting requests
        into the running batch (a prefill), then decodes for up to stream_interval_s, off the
        event loop so arrivals, disconnects and health checks are still handled."""
        while self._waiting or self._batch:
            if not self._batch:
                # An idle batch waits a moment, so a burst of arrivals shares one prefill.
                await asyncio.sleep(self.args.batch_wait_timeout_s)
            joining = self._take_waiting()
            try:
                merged = await asyncio.to_thread(self._decode_round, joining)
            except Exception as e:  # a model failure: fail these requests, keep serving
                for job in [*joining, *self._batch.keys]:
                    job.events.put_nowait(e)
                self._batch = RunningBatch(self.generator)
                continue
            for job, delta in merged.items():
                job.events.put_nowait(delta)

    def _take_waiting(self) -> list[_Job]:
        self._waiting = [j for j in self._waiting if not j.cancelled]
        if self._batch and not self._batch.can_join:
            return []
        room = self.args.max_batch_size - len(self._batch)
        joining, self._waiting = self._waiting[:room], self._waiting[room:]
        return joining

    def _decode_round(self, joining: list[_Job]) -> dict:
        """Prefill the joining jobs, then decode steps for up to stream_interval_s; each
        job's events merged into one Delta, which keeps the per-token cost of the thread hop
        and of the HTTP stream off the hot path."""
        merged: dict = {}
        deadline = time.perf_counter() + self.args.stream_interval_s
        if joining:
            prompts = [j.prompt_ids for j in joining]
            _merge_events(merged, self._batch.add(joining, prompts, [j.params for j in joining]))
        while self._batch and time.perf_counter() < deadline:
            _merge_events(merged, self._batch.step(cancelled=lambda job: job.cancelled))
        return merged

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
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
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

    def _check_sampling(self, req, max_tokens: int | None) -> int:
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
        return max_tokens

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
        max_tokens = self._check_sampling(req, req.max_tokens)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise APIError(400, "prompt is empty", "prompt")
        if req.stream and len(prompts) > 1:
            raise APIError(400, "stream=true takes a single prompt", "prompt")
        jobs = [
            _Job(self._encode(p, max_tokens, "prompt"), _sampling(req, max_tokens)) for p in prompts
        ]
        rid = new_id("cmpl")
        return await self._respond(
            "completions",
            jobs,
            req.stream,
            stream_chunk=lambda d: completion_chunk(
                rid, self.model_name, 0, d.text, d.finish_reason
            ),
            body=lambda choices, use: completion_body(
                rid,
                self.model_name,
                [
                    {
                        "index": i,
                        "text": c["text"],
                        "finish_reason": c["finish_reason"],
                        "logprobs": None,
                    }
                    for i, c in enumerate(choices)
                ],
                use,
            ),
        )

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        req = await self._parse(request, ChatCompletionRequest)
        if not req.messages:
            raise APIError(400, "messages is empty", "messages")
        max_tokens = self._check_sampling(req, req.max_completion_tokens or req.max_tokens)
        prompt = self.generator.apply_chat_template([m.model_dump() for m in req.messages])
        jobs = [_Job(self._encode(prompt, max_tokens, "messages"), _sampling(req, max_tokens))]
        rid = new_id("chatcmpl")
        return await self._respond(
            "chat",
            jobs,
            req.stream,
            stream_chunk=lambda d: chat_chunk(
                rid, self.model_name, {"content": d.text} if d.text else {}, d.finish_reason
            ),
            first_chunk=chat_chunk(
                rid, self.model_name, {"role": "assistant", "content": ""}, None
            ),
            body=lambda choices, use: chat_body(
                rid,
                self.model_name,
                [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": choices[0]["text"]},
                        "finish_reason": choices[0]["finish_reason"],
                    }
                ],
                use,
            ),
        )

    async def _respond(
        self,
        route: str,
        jobs: list[_Job],
        stream: bool,
        stream_chunk,
        body,
        first_chunk: dict | None = None,
    ):
        # Every check is done: from here only the queue can refuse, and it answers before
        # any stream starts, so an error is always a real HTTP status.
        self._admit()
        self._in_flight += len(jobs)
        if stream:
            return StreamingResponse(
                self._sse(route, jobs[0], stream_chunk, first_chunk), media_type="text/event-stream"
            )
        try:
            results = await asyncio.gather(*(self._collect(j) for j in jobs))
        finally:
            self._in_flight -= len(jobs)
        self._requests.inc(tags={"route": route, "status": "200"})
        prompt_tokens = sum(len(j.prompt_ids) for j in jobs)
        completion_tokens = sum(r["completion_tokens"] for r in results)
        return body(results, usage(prompt_tokens, completion_tokens))

    async def _collect(self, job: _Job) -> dict:
        text, last = [], None
        async for delta in self._run(job):
            text.append(delta.text)
            last = delta
        return {
            "text": "".join(text),
            "finish_reason": last.finish_reason if last else "stop",
            "completion_tokens": last.token_count if last else 0,
        }

    async def _sse(self, route: str, job: _Job, chunk, first_chunk) -> AsyncIterator[str]:
        try:
            if first_chunk:
                yield f"data: {json.dumps(first_chunk)}\n\n"
            async for delta in self._run(job):
                if delta.text or delta.finish_reason:
                    yield f"data: {json.dumps(chunk(delta))}\n\n"
            yield "data: [DONE]\n\n"
            self._requests.inc(tags={"route": route, "status": "200"})
        finally:
            self._in_flight -= 1

    # ---- Serve hooks ----------------------------------------------------------------------
    async def check_health(self) -> None:
        """A real one-token generation: a replica whose model cannot generate is unhealthy."""
        ids = self.generator.encode("ok") or [0]
        await asyncio.to_thread(self.generator.generate, [ids], [SamplingParams(max_tokens=1)])


def deployment_options(args: ServeArgs) -> dict:
    auto = args.autoscaling
    return {
        # Serve admits a little more than our own limit so that the replica, not Serve's
        # router, answers overload, with an OpenAI-shaped 429 and Retry-After.
        "max_ongoing_requests": args.max_ongoing_requests + args.max_queued_requests + 1,
        "autoscaling_config": {
            "min_replicas": auto.min_replicas,
            "max_replicas": auto.max_replicas,
            "initial_replicas": max(1, auto.min_replicas),
            "target_ongoing_requests": auto.target_ongoing_requests,
            "upscale_delay_s": auto.upscale_delay_s,
            "downscale_delay_s": auto.downscale_delay_s,
            "metrics_interval_s": auto.metrics_interval_s,
            "look_back_period_s": auto.look_back_period_s,
        },
        "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        "health_check_period_s": 10.0,
    }


def build_app(args) -> serve.Application:
    """Entry for `serve run`/`serve deploy` (``args`` a dict) and for cluster/serve.py."""
    if isinstance(args, dict):
        args = ServeArgs.from_dict(args)
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        raise ServeConfigError(
            f"model_dir={args.model_dir!r} is not a Hugging Face export "
            "(no config.json); allowed: an export directory such as "
            "runs/<experiment>/<run>/export"
        )
    return LLMServer.options(**deployment_options(args)).bind(args)


def args_as_dict(args: ServeArgs) -> dict:
    return asdict(args)
