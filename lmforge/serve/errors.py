"""OpenAI's error envelope, and the FastAPI handlers that put every error into it.

Every non-2xx response, including validation errors, unknown routes and unexpected
exceptions, has the body `{"error": {"message", "type", "param", "code"}}` (all four keys,
`null` where unknown), so the official clients raise their typed exceptions
(`BadRequestError`, `NotFoundError`, ...) with `.param` and `.code` filled in. Nothing
may come back in FastAPI's own `{"detail": ...}` shape, and no traceback reaches a client.

The inner object is the `openai` package's `ErrorObject`; the envelope around it has no
type of its own in the package (the client reads `body["error"]`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from openai.types.shared import ErrorObject
from ray.exceptions import TaskCancelledError
from starlette.exceptions import HTTPException as StarletteHTTPException

# Serve forwards the "ray.serve" logger to the replica's log file and the driver.
logger = logging.getLogger("ray.serve")


def error_object(
    message: str,
    type: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> ErrorObject:
    """The inner error object, with all four keys set (so all four are serialized)."""
    return ErrorObject(message=message, type=type, param=param, code=code)


def error_envelope(error: ErrorObject) -> dict[str, Any]:
    """`{"error": {...}}`: the JSON body of an error response or of an error event."""
    return {"error": error.model_dump(mode="json", exclude_unset=True)}


def error_response(status: int, error: ErrorObject) -> JSONResponse:
    """A JSON response in OpenAI's error envelope."""
    return JSONResponse(error_envelope(error), status_code=status)


class OpenAIError(Exception):
    """An error to return to the client as OpenAI's error envelope, with HTTP `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_object(message, type, param=param, code=code)


# Parts of a pydantic error location that name a union member ("str", "list[TextPart]")
# rather than a field; fields in the protocol are snake_case.
_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    """`("body", "messages", 0, "role")` -> `"messages[0].role"`; None for the whole body."""
    param = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif _FIELD_NAME.match(part) and part not in _TYPE_TAGS:
            param += f".{part}" if param else part
    return param or None


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        message = "We could not parse the JSON body of your request: it is not valid JSON."
        return error_response(400, error_object(message))
    param = _param_from_loc(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    message = f"Invalid value for '{param}': {msg}" if param else f"Invalid request body: {msg}"
    return error_response(400, error_object(message, param=param))


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Raised by routing itself: unknown paths (404) and wrong methods (405).
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"Invalid URL ({where})"
    elif exc.status_code == 405:
        message = f"Method not allowed ({where})"
    else:
        message = str(exc.detail)
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    return error_response(exc.status_code, error_object(message, kind))


async def _on_openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return error_response(exc.status, exc.body)


def server_error(doing: str, exc: BaseException) -> ErrorObject:
    """A `server_error` that names the exception's type only: details stay in the log."""
    return error_object(
        f"The server had an error while {doing} ({type(exc).__name__}).", "server_error"
    )


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, TaskCancelledError):
        # Serve cancels the request when its client disconnects (e.g. mid-stream): not a
        # server fault, and nobody is left to read the response.
        logger.info("%s %s: client disconnected", request.method, request.url.path)
    else:
        # The traceback goes to the replica log, never to the client.
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, server_error("processing your request", exc))


def install_error_handlers(app: FastAPI) -> None:
    """Map every error raised while serving `app` to OpenAI's error envelope."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(OpenAIError, _on_openai_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected_error)
