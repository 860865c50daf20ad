"""What each request did: a log line, and Prometheus metrics through Ray Serve.

    record = RequestRecord.start(request_id, route)   # the middleware, per request
    engine = MeteredEngine(engine)                   # counts tokens into the record
    metrics.finish(record, status)                    # one log line + the metrics

The engine's own results give the counts: `prompt_tokens` is the length of the prompt
ids it was given, completion tokens are the `token_ids` of its `GenerationDelta`s (all
`n` choices summed; a whole-body answer is its stream collected), TTFT is when the
first delta with tokens came back. The record of the request being served lives in a
context variable, which the tasks and worker threads serving the request inherit.

Metrics (`ray.serve.metrics`, exported by each node's Ray metrics agent, prefixed `ray_`
in Prometheus): `lmforge_requests` by route and status, `lmforge_ttft_seconds` and
`lmforge_latency_seconds` histograms, `lmforge_generated_tokens`, and the gauges
`lmforge_ongoing_requests` / `lmforge_queued_requests` of each replica.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.serve.engine import Engine, GenerationDelta

logger = logging.getLogger("ray.serve")

# seconds; TTFT of a small model on CPU is milliseconds, a long answer minutes
LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "lmforge_request", default=None
)


@dataclass
class RequestRecord:
    """One request, as the log line and the metrics report it (times: perf_counter s)."""

    request_id: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None
    engine_failed: bool = False

    def tokens(self, prompt_ids: list[int], token_ids: list[int]) -> None:
        """Count a delta's or a result's tokens; the first ones set the TTFT."""
        self.prompt_tokens = max(self.prompt_tokens, len(prompt_ids))
        self.completion_tokens += len(token_ids)
        if token_ids and self.first_token is None:
            self.first_token = time.perf_counter()

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


class MeteredEngine:
    """An `Engine` that counts what it streams into the current `RequestRecord`.

    Anything else is the wrapped engine's (`__getattr__`), so an engine with more
    methods than the protocol keeps them. Closing the stream early closes the engine's
    (which cancels the generation).
    """

    def __init__(self, engine: Engine) -> None:
        self.inner = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def max_context_length(self) -> int:
        return self.inner.max_context_length

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.inner.encode_prompt(prompt)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return self.inner.encode_chat(messages)

    async def generate_stream(
        self, prompt_ids: list[int], *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenerationDelta]:
        record = CURRENT.get()
        stream = self.inner.generate_stream(prompt_ids, *args, **kwargs)
        try:
            async for delta in stream:
                if record is not None:
                    record.tokens(prompt_ids, delta.token_ids)
                yield delta
        except Exception:
            if record is not None:
                record.engine_failed = True
            raise
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()


def _tag_keys(*names: str) -> Any:
    # ray annotates `tag_keys` as `Tuple[str]` (one name); any number is accepted
    return names


class ServeMetrics:
    """The replica's Prometheus metrics; created in the replica (Ray must be up)."""

    def __init__(self, model: str) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self._tags = {"model": model}
        self.requests = Counter(
            "lmforge_requests",
            description="Requests answered, by route and HTTP status.",
            tag_keys=_tag_keys("model", "route", "status"),
        )
        self.ttft = Histogram(
            "lmforge_ttft_seconds",
            description="Time from a request's arrival to its first generated token.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=_tag_keys("model", "route"),
        )
        self.latency = Histogram(
            "lmforge_latency_seconds",
            description="Time from a request's arrival to the end of its response.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=_tag_keys("model", "route", "status"),
        )
        self.generated = Counter(
            "lmforge_generated_tokens",
            description="Completion tokens generated.",
            tag_keys=_tag_keys("model", "route"),
        )
        self.ongoing = Gauge(
            "lmforge_ongoing_requests",
            description="Generations running on the replica.",
            tag_keys=_tag_keys("model"),
        )
        self.queued = Gauge(
            "lmforge_queued_requests",
            description="Requests waiting on the replica for a generation slot.",
            tag_keys=_tag_keys("model"),
        )

    def load(self, ongoing: int, queued: int) -> None:
        """The replica's load now (set whenever it changes)."""
        self.ongoing.set(ongoing, tags=self._tags)
        self.queued.set(queued, tags=self._tags)

    def finish(self, record: RequestRecord, status: int) -> None:
        """Report a finished request: the metrics, and one log line."""
        latency = time.perf_counter() - record.started
        tags = {**self._tags, "route": record.route}
        self.requests.inc(tags={**tags, "status": str(status)})
        self.latency.observe(latency, tags={**tags, "status": str(status)})
        if record.ttft_s is not None:
            self.ttft.observe(record.ttft_s, tags=tags)
        if record.completion_tokens:
            self.generated.inc(record.completion_tokens, tags=tags)
        log_request(record, status, latency)


def log_request(record: RequestRecord, status: int, latency_s: float) -> None:
    """`request id=... route=... status=... prompt_tokens=... completion_tokens=...
    ttft_ms=... latency_ms=...` (ttft `-` when no token was generated)."""
    ttft = "-" if record.ttft_s is None else f"{record.ttft_s * 1000:.1f}"
    logger.info(
        "request id=%s route=%s status=%d prompt_tokens=%d completion_tokens=%d "
        "ttft_ms=%s latency_ms=%.1f",
        record.request_id,
        record.route,
        status,
        record.prompt_tokens,
        record.completion_tokens,
        ttft,
        latency_s * 1000,
    )
