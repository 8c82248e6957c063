"""The HTTP layer of a replica: each route mapped to its serving class, and what HTTP itself
owns: the bearer key (401), the body's size (413, read chunk by chunk), JSON shape and
Unicode (400), parsing into the request model (which checks every bound, protocol.py), and
each route's answer count. `build_openai_app` wires admission, the serving classes and the
routes over one Generator and one Scheduler into a FastAPI app: the Serve deployment mounts
it (serve/deployment.py), the unit tests drive it with FastAPI's TestClient. No Ray here.

(No `from __future__ import annotations` here: FastAPI must see real `Request` annotations
on the endpoints, or it takes `request` for a query parameter.)
"""

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from schemas.serving import ServeConfig
from serve.adapters import Adapters
from serve.api.admission import Admission
from serve.api.errors import APIError, install_error_handlers
from serve.api.generation import RenderedJSON
from serve.api.metrics import ServingMetrics
from serve.api.protocol import ChatCompletionRequest, CompletionRequest, ServerLimits
from serve.api.request_checks import bearer_matches, check_payload, configured_key, counted
from serve.api.serving_adapters import (
    LoadLoraAdapterRequest,
    OpenAIServingAdapters,
    UnloadLoraAdapterRequest,
)
from serve.api.serving_chat import OpenAIServingChat
from serve.api.serving_completion import OpenAIServingCompletion
from serve.api.serving_tokenizer import (
    DetokenizeRequest,
    OpenAIServingTokenizer,
    TokenizeRequest,
)
from serve.generator import Generator
from serve.scheduler import Scheduler


class Router:
    def __init__(
        self,
        config: ServeConfig,
        completion: OpenAIServingCompletion,
        chat: OpenAIServingChat,
        tokenizer: OpenAIServingTokenizer,
        admission: Admission,
        metrics: ServingMetrics,
        adapters: OpenAIServingAdapters,
    ) -> None:
        self.completion, self.chat, self.tokenizer = completion, chat, tokenizer
        self.adapters = adapters
        self.admission, self.metrics = admission, metrics
        self.max_body_bytes = config.max_body_bytes
        self.api_key = configured_key(config)

    def mount(self, app: FastAPI) -> None:
        app.add_api_route("/health", self.health, methods=["GET"])
        app.add_api_route("/v1/models", self.models, methods=["GET"])
        app.add_api_route("/tokenize", self.tokenize, methods=["POST"])
        app.add_api_route("/detokenize", self.detokenize, methods=["POST"])
        app.add_api_route("/tokenizer_info", self.tokenizer_info, methods=["GET"])
        app.add_api_route("/v1/completions", self.completions, methods=["POST"])
        app.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        app.add_api_route("/v1/load_lora_adapter", self.load_lora_adapter, methods=["POST"])
        app.add_api_route("/v1/unload_lora_adapter", self.unload_lora_adapter, methods=["POST"])

    def _count(self, route: str, status: int | str) -> None:  # read by @counted
        self.metrics.count_request(route, str(status))

    # ---- what HTTP owns -------------------------------------------------------------------
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
        limit = self.max_body_bytes
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

    async def _parse(self, request: Request, model_cls: type[BaseModel], limits: ServerLimits):
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
            # A bound the request breaks raises its APIError out of validation as it is.
            return model_cls.model_validate(payload, context=limits)
        except ValidationError as e:  # a wrong type: rendered like FastAPI's own
            raise RequestValidationError(e.errors()) from None

    # ---- routes ---------------------------------------------------------------------------
    async def health(self) -> dict:
        return {"status": "ok", "in_flight": self.admission.prompts}

    @counted("models")
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        return self.adapters.models()

    @counted("tokenize")
    async def tokenize(self, request: Request) -> dict:
        req = await self._parse(request, TokenizeRequest, self.tokenizer.limits)
        return await self.tokenizer.tokenize(req)

    @counted("detokenize")
    async def detokenize(self, request: Request) -> dict:
        req = await self._parse(request, DetokenizeRequest, self.tokenizer.limits)
        return await self.tokenizer.detokenize(req)

    @counted("tokenizer_info")
    async def tokenizer_info(self, request: Request) -> dict:
        self._authorize(request)
        return self.tokenizer.info()

    @counted("completions")
    async def completions(self, request: Request):
        req = await self._parse(request, CompletionRequest, self.completion.limits)
        return _http_answer(await self.completion.create_completion(req))

    @counted("chat")
    async def chat_completions(self, request: Request):
        req = await self._parse(request, ChatCompletionRequest, self.chat.limits)
        return _http_answer(await self.chat.create_chat_completion(req))

    @counted("load_lora_adapter")
    async def load_lora_adapter(self, request: Request) -> dict:
        return await self.adapters.load(await self._parse(request, LoadLoraAdapterRequest, None))

    @counted("unload_lora_adapter")
    async def unload_lora_adapter(self, request: Request) -> dict:
        req = await self._parse(request, UnloadLoraAdapterRequest, None)
        return await self.adapters.unload(req)


def _http_answer(answer):
    """A response body as it is (FastAPI renders it as JSON; a large one came rendered off
    the loop already); a stream's events as SSE."""
    if isinstance(answer, RenderedJSON):
        return Response(answer, media_type="application/json")
    if isinstance(answer, dict):
        return answer
    return StreamingResponse(answer, media_type="text/event-stream")


def build_openai_app(
    config: ServeConfig,
    generator: Generator,
    scheduler: Scheduler,
    metrics: ServingMetrics | None = None,
    client_gone: tuple[type[Exception], ...] = (),
    adapters: Adapters | None = None,
) -> FastAPI:
    """The replica's whole API over ``generator`` and ``scheduler``: admission shared by the
    generating routes, a serving class per endpoint, and the routes. ``client_gone``: see
    serve/api/errors.py."""
    metrics = metrics or ServingMetrics()
    admission = Admission(
        max_prompts=config.max_ongoing_requests + config.max_queued_requests,
        max_tokens=config.max_admitted_tokens,
        retry_after_s=config.retry_after_s,
        on_change=metrics.set_in_flight,
        max_scored_tokens=config.max_scored_tokens,
    )
    base_id = config.model_name or generator.model_name
    # The adapters of serve.lora.adapters load here (or in the deployment, which publishes
    # run-time loads to the other replicas), before the replica answers.
    adapters = adapters or Adapters(generator, config.lora, base_id)
    adapters.in_use = scheduler.adapters_in_use
    completion = OpenAIServingCompletion(generator, scheduler, config, admission, metrics, adapters)
    chat = OpenAIServingChat(generator, scheduler, config, admission, metrics, adapters)
    tokenizer = OpenAIServingTokenizer(generator, config, adapters)  # adapters share it
    # No /docs, /redoc or /openapi.json: the API is OpenAI's, and nothing answers without
    # the key.
    app = FastAPI(title="zeroray", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app, client_gone)
    served_adapters = OpenAIServingAdapters(adapters, scheduler, base_id, config.lineage_id)
    Router(config, completion, chat, tokenizer, admission, metrics, served_adapters).mount(app)
    return app
