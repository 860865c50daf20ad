"""The Ray Serve application: an OpenAI-compatible HTTP API over one engine.

    app = build_app("models:/tiny@champion", served_model_name="tiny")
    serve.run(app, route_prefix="/")

Routes: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (both with
`stream`), `GET /health`. Every error, including validation errors and unknown routes,
comes back in OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`, so the
official clients raise their typed exceptions (`BadRequestError`, `NotFoundError`, ...).
"""

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.exceptions import TaskCancelledError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.serve.engine import Engine, GenerationDelta, HFEngine
from lmforge.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorBody,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
)

EngineFactory = Callable[[str], Engine]

# Serve forwards the "ray.serve" logger to the replica's log file and the driver.
logger = logging.getLogger("ray.serve")


class OpenAIError(Exception):
    """An error to return to the client as OpenAI's error envelope."""

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
        self.body = ErrorBody(message=message, type=type, param=param, code=code)


def error_response(status: int, body: ErrorBody) -> JSONResponse:
    """A JSON response in OpenAI's error envelope."""
    return JSONResponse(ErrorResponse(error=body).model_dump(mode="json"), status_code=status)


# ---- error handlers: nothing may come back in FastAPI's `{"detail": ...}` shape ---------

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
        return error_response(400, ErrorBody(message=message, type="invalid_request_error"))
    param = _param_from_loc(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    message = f"Invalid value for '{param}': {msg}" if param else f"Invalid request body: {msg}"
    return error_response(
        400, ErrorBody(message=message, type="invalid_request_error", param=param)
    )


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
    return error_response(exc.status_code, ErrorBody(message=message, type=kind))


async def _on_openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return error_response(exc.status, exc.body)


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, TaskCancelledError):
        # Serve cancels the request when its client disconnects (e.g. mid-stream): not a
        # server fault, and nobody is left to read the response.
        logger.info("%s %s: client disconnected", request.method, request.url.path)
    else:
        # The traceback goes to the replica log, never to the client.
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    message = f"The server had an error while processing your request ({type(exc).__name__})."
    return error_response(500, ErrorBody(message=message, type="server_error"))


def install_error_handlers(app: FastAPI) -> None:
    """Map every error raised while serving `app` to OpenAI's error envelope."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(OpenAIError, _on_openai_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected_error)


# `serve.ingress` freezes (pickles) the app when the class below is decorated: the route
# functions keep only the module globals that exist at that moment, so the handlers and
# every helper the routes call must be defined above the class.
api = FastAPI(title="lmforge", docs_url=None, redoc_url=None)
install_error_handlers(api)


def _sse(event: BaseModel) -> str:
    """One Server-Sent Event carrying `event` as JSON."""
    return f"data: {event.model_dump_json()}\n\n"


_SSE_DONE = "data: [DONE]\n\n"
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


@serve.deployment
@serve.ingress(api)
class OpenAIServer:
    """Serves one model under `served_model_name` through the OpenAI HTTP API."""

    def __init__(
        self,
        model: str,
        *,
        served_model_name: str,
        default_max_tokens: int = 64,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        # Resolved here, in the replica, so a `models:/NAME@ALIAS` URI is downloaded on
        # the node that serves it rather than on the machine that deployed it.
        from lmforge.platform.registry import resolve_model_dir

        model_dir = resolve_model_dir(model)
        self._engine: Engine = (engine_factory or HFEngine)(model_dir)
        self._name = served_model_name
        self._default_max_tokens = default_max_tokens
        self._created = int(time.time())
        logger.info("Serving model %r as %r from %s", model, served_model_name, model_dir)

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        """Liveness of the replica and the name of its model."""
        return {"status": "ok", "model": self._name}

    @api.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        """The one served model."""
        card = ModelCard(id=self._name, created=self._created)
        return ModelList(data=[card]).model_dump(mode="json")

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest) -> Any:
        """Complete one prompt (OpenAI `POST /v1/completions`)."""
        self._check_model(body.model)
        prompt_ids = self._engine.encode_prompt(body.prompt_text)
        params = self._sampling(body, prompt_ids, body.max_tokens, "max_tokens", "prompt")
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
            return Completion(
                id=rid, created=created, model=self._name, choices=choices, usage=usage
            )

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def events() -> AsyncIterator[str]:
                completion_tokens = 0
                finish = None
                async for delta in self._deltas(prompt_ids, params):
                    completion_tokens += len(delta.token_ids)
                    finish = delta.finish_reason or finish
                    if delta.text:
                        yield _sse(chunk([CompletionChoice(text=delta.text, finish_reason=None)]))
                yield _sse(chunk([CompletionChoice(text="", finish_reason=finish)]))
                if include_usage:
                    yield _sse(chunk([], _usage(len(prompt_ids), completion_tokens)))

            return self._stream(events())

        result = await asyncio.to_thread(self._engine.generate, prompt_ids, **params)
        choice = CompletionChoice(text=result.text, finish_reason=result.finish_reason)
        return chunk([choice], _usage(len(prompt_ids), len(result.token_ids))).model_dump(
            mode="json"
        )

    @api.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest) -> Any:
        """Answer a conversation (OpenAI `POST /v1/chat/completions`)."""
        self._check_model(body.model)
        messages = [m.as_template_message() for m in body.messages]
        try:
            prompt_ids = self._engine.encode_chat(messages)
        except Exception as exc:  # a chat template rejects a conversation by raising
            raise OpenAIError(400, f"Cannot render messages: {exc}", param="messages") from exc
        limit_param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        params = self._sampling(body, prompt_ids, body.token_limit, limit_param, "messages")
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def chunk(delta: ChatDelta, finish: Any = None) -> ChatCompletionChunk:
                choice = ChatChunkChoice(delta=delta, finish_reason=finish)
                return ChatCompletionChunk(
                    id=rid, created=created, model=self._name, choices=[choice]
                )

            async def events() -> AsyncIterator[str]:
                yield _sse(chunk(ChatDelta(role="assistant", content="")))
                completion_tokens = 0
                finish = None
                async for delta in self._deltas(prompt_ids, params):
                    completion_tokens += len(delta.token_ids)
                    finish = delta.finish_reason or finish
                    if delta.text:
                        yield _sse(chunk(ChatDelta(content=delta.text)))
                yield _sse(chunk(ChatDelta(), finish))
                if include_usage:
                    usage = _usage(len(prompt_ids), completion_tokens)
                    yield _sse(
                        ChatCompletionChunk(
                            id=rid, created=created, model=self._name, choices=[], usage=usage
                        )
                    )

            return self._stream(events())

        result = await asyncio.to_thread(self._engine.generate, prompt_ids, **params)
        choice = ChatChoice(
            message=AssistantMessage(content=result.text), finish_reason=result.finish_reason
        )
        response = ChatCompletion(
            id=rid,
            created=created,
            model=self._name,
            choices=[choice],
            usage=_usage(len(prompt_ids), len(result.token_ids)),
        )
        return response.model_dump(mode="json")

    # ---- helpers ------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if model != self._name:
            raise OpenAIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

    def _sampling(
        self,
        body: CompletionRequest | ChatCompletionRequest,
        prompt_ids: list[int],
        requested: int | None,
        limit_param: str,
        prompt_param: str,
    ) -> dict[str, Any]:
        """Engine keyword arguments; the token budget is checked against the context."""
        context = self._engine.max_context_length
        room = context - len(prompt_ids)
        if not prompt_ids or room < 1:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {context} tokens, and the prompt "
                f"has {len(prompt_ids)} tokens; it must have between 1 and {context - 1}.",
                param=prompt_param,
                code="context_length_exceeded" if prompt_ids else None,
            )
        if requested is not None and requested > room:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {len(prompt_ids) + requested} tokens ({len(prompt_ids)} in the "
                f"prompt, {requested} for the completion).",
                param=limit_param,
                code="context_length_exceeded",
            )
        return {
            # Without an explicit limit, fill what the context leaves, up to the default.
            "max_tokens": requested or min(self._default_max_tokens, room),
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": body.stop_list,
            "seed": body.seed,
        }

    async def _deltas(
        self, prompt_ids: list[int], params: dict[str, Any]
    ) -> AsyncIterator[GenerationDelta]:
        """The engine's stream, each step computed in a worker thread off the event loop."""
        stream = self._engine.generate_stream(prompt_ids, **params)
        try:
            while (delta := await asyncio.to_thread(next, stream, None)) is not None:
                yield delta
        finally:
            # On client disconnect the step in flight keeps its thread until it ends;
            # closing a generator that is executing raises, and GC closes it later.
            with contextlib.suppress(ValueError):
                stream.close()

    def _stream(self, events: AsyncIterator[str]) -> StreamingResponse:
        """SSE response; a failure mid-stream becomes an error event (headers are sent)."""

        async def guarded() -> AsyncIterator[str]:
            try:
                async for event in events:
                    yield event
            except Exception as exc:
                logger.error("stream failed", exc_info=exc)
                body = ErrorBody(
                    message=f"The server had an error while streaming ({type(exc).__name__}).",
                    type="server_error",
                )
                yield _sse(ErrorResponse(error=body))
            yield _SSE_DONE

        return StreamingResponse(guarded(), media_type="text/event-stream", headers=_STREAM_HEADERS)


def build_app(
    model: str,
    *,
    served_model_name: str,
    num_replicas: int = 1,
    ray_actor_options: dict[str, Any] | None = None,
    default_max_tokens: int = 64,
    engine_factory: EngineFactory | None = None,
) -> serve.Application:
    """The Serve application for `model` (a local HF directory or `models:/NAME@ALIAS`).

    `engine_factory(model_dir) -> Engine` replaces `HFEngine` (e.g. a vLLM engine, or a
    small fake in tests); it is pickled and called inside each replica.
    `ray_actor_options` is passed to each replica (e.g. `{"num_gpus": 1}`).
    """
    options: dict[str, Any] = {"num_replicas": num_replicas}
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    deployment = cast(serve.Deployment, OpenAIServer)  # the decorator made it one
    return deployment.options(**options).bind(
        model,
        served_model_name=served_model_name,
        default_max_tokens=default_max_tokens,
        engine_factory=engine_factory,
    )
