"""What a replica does around every request: keys, admission, timeout, log and metrics.

    ops = ReplicaOps.start(OpsSettings.from_config(cfg), model="tiny")  # in the replica
    install_operations(api)  # once, on the FastAPI app, before `serve.ingress`

`OperationsMiddleware` is a plain ASGI middleware in front of the routes:

- every route but `/health` needs a configured API key when there are keys (401 in
  OpenAI's envelope, code `invalid_api_key`, otherwise);
- a generation (`POST .../completions`) takes a slot of the replica's `Admission`, or
  is answered 503 with `Retry-After` at once when slots and queue are full;
- a generation still running after `request_timeout_s` (queue time included) is
  cancelled: 504 in OpenAI's envelope, or, when a stream had started, an error event
  and `data: [DONE]`; its slot is given back;
- each request gets a `RequestRecord` (tokens and TTFT counted by `MeteredEngine`),
  reported when it ends as one log line and as metrics (`metrics.py`).

One replica is one process, so the middleware finds the replica's `ReplicaOps` in this
module (`ReplicaOps.start` puts it there); without one it lets requests through.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmforge.serve.admission import Admission
from lmforge.serve.auth import ApiKeys, load_keys, warn_if_open
from lmforge.serve.config import ServeConfig
from lmforge.serve.errors import error_envelope, error_object
from lmforge.serve.metrics import CURRENT, RequestRecord, ServeMetrics

OPEN_PATHS = {"/health"}  # answered without a key: a load balancer's probe has none
ROUTES = {"/health", "/v1/models", "/v1/completions", "/v1/chat/completions"}
ENGINE_FAILURES_UNHEALTHY = 3  # consecutive failed generations that fail the health check


@dataclass(frozen=True, kw_only=True)
class OpsSettings:
    """What a replica needs of the serve section (no key: keys are read in the replica)."""

    max_ongoing_requests: int = 32
    max_queued_requests: int = 64
    retry_after_s: int = 1
    request_timeout_s: float = 300.0
    api_keys_file: str | None = None
    host: str = "127.0.0.1"

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> OpsSettings:
        return cls(
            max_ongoing_requests=cfg.max_ongoing_requests,
            max_queued_requests=cfg.max_queued_requests,
            retry_after_s=cfg.retry_after_s,
            request_timeout_s=cfg.request_timeout_s,
            api_keys_file=cfg.api_keys_file,
            host=cfg.host,
        )


class ReplicaOps:
    """The replica's keys, admission control and metrics."""

    current: ClassVar[ReplicaOps | None] = None

    def __init__(self, settings: OpsSettings, *, model: str) -> None:
        self.settings = settings
        self.keys = ApiKeys(load_keys(settings.api_keys_file))
        self.metrics = ServeMetrics(model)
        self.admission = Admission(
            settings.max_ongoing_requests, settings.max_queued_requests, self.metrics.load
        )
        self.engine_failures = 0  # consecutive generations the engine failed
        warn_if_open(settings.host, self.keys)

    @classmethod
    def start(cls, settings: OpsSettings, *, model: str) -> ReplicaOps:
        """The replica's operations, found by the middleware from now on."""
        cls.current = cls(settings, model=model)
        return cls.current

    def finish(self, record: RequestRecord, status: int) -> None:
        if record.engine_failed:
            self.engine_failures += 1
        elif record.completion_tokens:
            self.engine_failures = 0
        self.metrics.finish(record, status)

    def check_health(self, engine: Any) -> None:
        """Raise when the engine is broken: its own `check_health` (if it has one)
        raises, or its last generations all failed."""
        if self.engine_failures >= ENGINE_FAILURES_UNHEALTHY:
            raise RuntimeError(f"the engine failed the last {self.engine_failures} generations")
        own = getattr(engine, "check_health", None)
        if callable(own):
            own()


def _request_id(scope: Scope) -> str:
    try:
        from ray.serve.context import _get_serve_request_context

        rid = _get_serve_request_context().request_id
    except Exception:  # outside Serve (a test client): make one
        rid = ""
    return rid or uuid.uuid4().hex


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    raw = json.dumps(body, separators=(",", ":")).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *extra],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class OperationsMiddleware:
    """Keys, admission, timeout, log line and metrics for each HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ops = ReplicaOps.current
        if scope["type"] != "http" or ops is None:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")  # the application's route prefix, if any
        path = path[len(root) :] if root and path.startswith(root) else path
        route = path if path in ROUTES else "other"
        record = RequestRecord(_request_id(scope), route)
        token = CURRENT.set(record)
        sent: dict[str, Any] = {"status": None}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                sent["stream"] = any(
                    k == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message.get("headers", [])
                )
            await send(message)

        try:
            headers = dict(scope.get("headers", []))
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if path not in OPEN_PATHS and not ops.keys.allows(auth):
                await _send_json(send_status, 401, _invalid_key(bool(auth)))
            elif scope.get("method") == "POST" and path.endswith("/completions"):
                await self._generate(ops, scope, receive, send_status, sent)
            else:
                await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            sent["status"] = sent["status"] or 499  # the client went away
            raise
        finally:
            CURRENT.reset(token)
            ops.finish(record, sent["status"] or 500)

    async def _generate(
        self, ops: ReplicaOps, scope: Scope, receive: Receive, send: Send, sent: dict[str, Any]
    ) -> None:
        settings = ops.settings
        if ops.admission.full:
            message = (
                f"The server is at capacity ({settings.max_ongoing_requests} requests running, "
                f"{settings.max_queued_requests} waiting); retry after {settings.retry_after_s}s."
            )
            body = error_envelope(error_object(message, "server_error", code="overloaded"))
            await _send_json(send, 503, body, {"Retry-After": str(settings.retry_after_s)})
            return
        timeout = settings.request_timeout_s
        try:
            async with ops.admission.slot():
                await asyncio.wait_for(self.app(scope, receive, send), timeout)
        except asyncio.TimeoutError:
            message = f"The request timed out after {timeout:g}s."
            error = error_envelope(error_object(message, "server_error", code="timeout"))
            if sent["status"] is None:
                await _send_json(send, 504, error)
                return
            if sent.get("stream"):  # headers went out: the stream ends with the error
                event = f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n"
                await send({"type": "http.response.body", "body": event.encode()})
            else:
                await send({"type": "http.response.body", "body": b""})


def _invalid_key(given: bool) -> dict[str, Any]:
    message = (
        "Incorrect API key provided."
        if given
        else "You didn't provide an API key. Pass it as 'Authorization: Bearer KEY'."
    )
    return error_envelope(error_object(message, code="invalid_api_key"))


def install_operations(app: FastAPI) -> None:
    """Put `OperationsMiddleware` in front of every route of `app`."""
    app.add_middleware(OperationsMiddleware)
