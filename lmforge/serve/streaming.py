"""`stream: true`: the engine's deltas as Server-Sent Events, one loop for both endpoints.

A stream is a sequence of `data: {json}\\n\\n` events ending in `data: [DONE]\\n\\n`:

    the opening chunks (chat: the assistant role), a chunk per non-empty piece of text,
    a chunk with the finish reason, and with `stream_options.include_usage` a last
    chunk with `usage` and no choices

What the chunks look like is the endpoint's business (a `ChunkFormat`, see
`responses.py`); counting and ordering are the same for both and live here. A delta whose
text is held back (empty) sends nothing, but its tokens count in `completion_tokens`.
Each engine step runs in a worker thread, off the event loop. A failure after the
response headers went out cannot change the status any more: it is sent as one event in
OpenAI's error envelope, followed by `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi.responses import StreamingResponse
from openai.types import CompletionUsage
from pydantic import BaseModel

from lmforge.serve.engine import Engine, FinishReason, GenerationDelta
from lmforge.serve.errors import error_envelope, server_error
from lmforge.serve.responses import usage

logger = logging.getLogger("ray.serve")

SSE_DONE = "data: [DONE]\n\n"
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChunkFormat(Protocol):
    """The chunks of one streamed response, in the order they are sent."""

    def opening(self) -> list[BaseModel]:
        """Chunks sent before any text."""
        ...

    def text(self, text: str) -> BaseModel:
        """A chunk carrying a piece of the generated text."""
        ...

    def finish(self, reason: FinishReason | None) -> BaseModel:
        """The chunk that ends the choice."""
        ...

    def usage(self, counts: CompletionUsage) -> BaseModel:
        """The chunk carrying token usage, sent last on request."""
        ...


def sse(body: BaseModel) -> str:
    """One Server-Sent Event carrying a response body as JSON (the fields that were set)."""
    return f"data: {body.model_dump_json(exclude_unset=True)}\n\n"


async def engine_deltas(
    engine: Engine, prompt_ids: list[int], params: dict[str, Any]
) -> AsyncIterator[GenerationDelta]:
    """The engine's stream, each step computed in a worker thread off the event loop."""
    stream = engine.generate_stream(prompt_ids, **params)
    try:
        while (delta := await asyncio.to_thread(next, stream, None)) is not None:
            yield delta
    finally:
        # On client disconnect the step in flight keeps its thread until it ends;
        # closing a generator that is executing raises, and GC closes it later.
        with contextlib.suppress(ValueError):
            stream.close()


async def sse_events(
    deltas: AsyncIterator[GenerationDelta],
    chunks: ChunkFormat,
    *,
    prompt_tokens: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The events of one streamed response, always ending in `data: [DONE]`."""
    try:
        for chunk in chunks.opening():
            yield sse(chunk)
        completion_tokens = 0
        finish: FinishReason | None = None
        async for delta in deltas:
            completion_tokens += len(delta.token_ids)
            finish = delta.finish_reason or finish
            if delta.text:
                yield sse(chunks.text(delta.text))
        yield sse(chunks.finish(finish))
        if include_usage:
            yield sse(chunks.usage(usage(prompt_tokens, completion_tokens)))
    except Exception as exc:
        logger.error("stream failed", exc_info=exc)
        envelope = error_envelope(server_error("streaming", exc))
        yield f"data: {json.dumps(envelope, separators=(',', ':'), ensure_ascii=False)}\n\n"
    yield SSE_DONE


def streaming_response(events: AsyncIterator[str]) -> StreamingResponse:
    """An SSE response that proxies do not buffer or cache."""
    return StreamingResponse(events, media_type="text/event-stream", headers=_STREAM_HEADERS)
