"""`stream: true`: the engine's deltas as Server-Sent Events, one loop for both endpoints.

A stream is a sequence of `data: {json}\\n\\n` events ending in `data: [DONE]\\n\\n`:

    per choice (`index`; with `n > 1` the choices' chunks interleave as they are made):
    the opening chunks (chat: the assistant role), a chunk per non-empty piece of text
    (or per delta with logprobs), a chunk with the finish reason; then, with
    `stream_options.include_usage`, a last chunk with `usage` and no choices

What the chunks look like is the endpoint's business (a `ChunkFormat`, see
`responses.py`); counting and ordering are the same for both and live here. A delta whose
text is held back (empty) sends nothing, but its tokens count in `completion_tokens`.
The engine streams without blocking the event loop. A failure after the response headers
went out cannot change the status any more: it is sent as one event in OpenAI's error
envelope, followed by `[DONE]`. When the client goes away, the response's iterator is
closed: the choices' streams are closed with it, which cancels their generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from fastapi.responses import StreamingResponse
from openai.types import CompletionUsage
from pydantic import BaseModel

from lmforge.serve.engine import FinishReason, GenerationDelta, TokenLogprob
from lmforge.serve.errors import error_envelope, server_error
from lmforge.serve.responses import usage

logger = logging.getLogger("ray.serve")

SSE_DONE = "data: [DONE]\n\n"
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChunkFormat(Protocol):
    """The chunks of one streamed response, in the order they are sent."""

    def opening(self, index: int) -> list[BaseModel]:
        """Chunks sent before any text of choice `index`."""
        ...

    def text(self, index: int, text: str, logprobs: list[TokenLogprob]) -> BaseModel:
        """A chunk carrying a piece of the generated text (and its tokens' logprobs)."""
        ...

    def finish(self, index: int, reason: FinishReason | None) -> BaseModel:
        """The chunk that ends choice `index`."""
        ...

    def usage(self, counts: CompletionUsage) -> BaseModel:
        """The chunk carrying token usage, sent last on request."""
        ...


def sse(body: BaseModel) -> str:
    """One Server-Sent Event carrying a response body as JSON (the fields that were set)."""
    return f"data: {body.model_dump_json(exclude_unset=True)}\n\n"


async def aclose(stream: AsyncIterator[GenerationDelta]) -> None:
    """Close an engine's stream now (an async generator's `finally` cancels its request)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def merged(
    streams: list[AsyncIterator[GenerationDelta]],
) -> AsyncGenerator[tuple[int, GenerationDelta | None]]:
    """The deltas of several choices as they come, as `(index, delta)`; `(index, None)`
    when choice `index` has ended. Closing this iterator cancels the choices' tasks."""
    if len(streams) == 1:  # the common case needs no tasks
        try:
            async for delta in streams[0]:
                yield 0, delta
        finally:
            await aclose(streams[0])
        yield 0, None
        return
    queue: asyncio.Queue[tuple[int, GenerationDelta | None] | BaseException] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[GenerationDelta]) -> None:
        try:
            async for delta in stream:
                queue.put_nowait((index, delta))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait(exc)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        for _ in range(len(streams)):
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item[1] is None:
                    break
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


async def sse_events(
    streams: list[AsyncIterator[GenerationDelta]],
    chunks: ChunkFormat,
    *,
    prompt_tokens: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The events of one streamed response of `len(streams)` choices, ending in [DONE]."""
    deltas = merged(streams)
    try:
        for index in range(len(streams)):
            for chunk in chunks.opening(index):
                yield sse(chunk)
        completion_tokens = 0
        finish: dict[int, FinishReason | None] = {}
        async for index, delta in deltas:
            if delta is None:
                yield sse(chunks.finish(index, finish.get(index)))
                continue
            completion_tokens += len(delta.token_ids)
            finish[index] = delta.finish_reason or finish.get(index)
            if delta.text or delta.logprobs:
                yield sse(chunks.text(index, delta.text, delta.logprobs))
        if include_usage:
            yield sse(chunks.usage(usage(prompt_tokens, completion_tokens)))
    except Exception as exc:
        logger.error("stream failed", exc_info=exc)
        envelope = error_envelope(server_error("streaming", exc))
        yield f"data: {json.dumps(envelope, separators=(',', ':'), ensure_ascii=False)}\n\n"
    finally:
        await deltas.aclose()
    yield SSE_DONE


def streaming_response(events: AsyncIterator[str]) -> StreamingResponse:
    """An SSE response that proxies do not buffer or cache."""
    return StreamingResponse(events, media_type="text/event-stream", headers=_STREAM_HEADERS)
