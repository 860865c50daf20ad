"""Admission control of one replica: a bounded number of generations, a bounded queue.

    admission = Admission(max_ongoing=32, max_queued=64)
    if admission.full:            # every slot taken and the queue full
        ...answer 503 with Retry-After
    async with admission.slot():  # waits in the queue, then holds a slot
        ...generate

The slot is held until the response is sent, a streamed one too, and given back when
the request ends in any way (done, failed, timed out, client gone). `on_change(ongoing,
queued)` is called whenever either count changes (the metrics' gauges). Everything runs
on the replica's event loop, so checking `full` and entering the queue cannot interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class Admission:
    """`max_ongoing` generations at once, `max_queued` more waiting for a slot."""

    def __init__(
        self,
        max_ongoing: int,
        max_queued: int,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_ongoing < 1 or max_queued < 0:
            raise ValueError("max_ongoing must be >= 1 and max_queued >= 0")
        self.max_ongoing = max_ongoing
        self.max_queued = max_queued
        self.ongoing = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(max_ongoing)
        self._on_change = on_change or (lambda ongoing, queued: None)

    @property
    def full(self) -> bool:
        """No free slot and no room in the queue: a new request must be turned away."""
        return self.ongoing + self.queued >= self.max_ongoing + self.max_queued

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a slot (counted as queued meanwhile), hold it for the block."""
        self.queued += 1
        self._on_change(self.ongoing, self.queued)
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.ongoing += 1
        self._on_change(self.ongoing, self.queued)
        try:
            yield
        finally:
            self.ongoing -= 1
            self._slots.release()
            self._on_change(self.ongoing, self.queued)
