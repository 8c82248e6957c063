"""The FastAPI application a replica's ingress wraps, and its error contract: no docs pages,
and every failure answered in the OpenAI shape {"error": {message, type, param, code}} with
its real status, never a text/plain page."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import TaskCancelledError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.protocol import APIError

logger = logging.getLogger("ray.serve")

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


@api.exception_handler(Exception)
async def _unexpected(_: Request, err: Exception) -> JSONResponse:
    if isinstance(err, TaskCancelledError):
        # Serve's way of telling a streaming response that its client disconnected: nobody
        # is left to answer, and the job was cancelled with the stream (scheduler.py).
        return _error_response(APIError(499, "client disconnected"))
    # A bug of ours still answers in the OpenAI shape, never a text/plain 500.
    logger.exception("unexpected error in a request", exc_info=err)
    return _error_response(APIError(500, f"internal error ({type(err).__name__})"))


def generation_failed(e: Exception) -> APIError:
    """A row that failed while decoding: its request ends alone, in the OpenAI shape."""
    if isinstance(e, APIError):
        return e
    logger.warning("generation failed for one request: %r", e)
    return APIError(500, f"generation failed: {type(e).__name__}: {e}", code="generation_error")
