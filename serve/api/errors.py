"""The API's error contract: every failure is answered in the OpenAI shape
{"error": {message, type, param, code}} with its real status, never a text/plain page.
`APIError` is raised anywhere in a request; `install_error_handlers` renders it, FastAPI's
own errors and any bug of ours the same way. No Ray here: the deployment names the
exceptions by which its runtime says that a client has gone."""

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# Ray Serve's logger: a replica's log lines land in its Serve log with the rest.
logger = logging.getLogger("ray.serve")


class APIError(Exception):
    """Raised anywhere in a request; rendered as {"error": {...}} with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            413: "invalid_request_error",
            422: "invalid_request_error",
            429: "rate_limit_error",
        }.get(self.status, "server_error")

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def internal_error(what: str, e: BaseException, code: str | None = None) -> APIError:
    """A 500 whose body says nothing of the cause (an exception's text can reveal memory
    state, paths or data): the cause is logged with a reference the body carries."""
    ref = uuid.uuid4().hex[:12]
    logger.error("%s (ref %s)", what, ref, exc_info=e)
    return APIError(500, f"{what} (ref {ref}; the server's log has the cause)", code=code)


def generation_failed(e: Exception) -> APIError:
    """A row that failed while decoding: its request ends alone, in the OpenAI shape."""
    if isinstance(e, APIError):
        return e
    return internal_error("generation failed", e, "generation_error")


def install_error_handlers(app: FastAPI, client_gone: tuple[type[Exception], ...] = ()) -> None:
    """``client_gone``: the exceptions by which the runtime tells a streaming response that
    its client disconnected (Ray Serve's TaskCancelledError); nobody is left to answer them,
    and the job was cancelled with the stream (serve/scheduler.py)."""

    async def api_error(_: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI answers 422 by default; OpenAI, vLLM and Ray Serve LLM answer 400.
        first = err.errors()[0] if err.errors() else {}
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        param = ".".join(loc) or None
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message, param = "request body is not valid JSON", None
        return error_response(APIError(400, f"{param}: {message}" if param else message, param))

    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(APIError(err.status_code, str(err.detail)))

    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        if isinstance(err, client_gone):
            return error_response(APIError(499, "client disconnected"))
        # A bug of ours still answers in the OpenAI shape, never a text/plain 500.
        return error_response(internal_error("internal error", err))

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
