"""The stream an agent iterates: events one at a time, or in batches with ``take``.

Acknowledgement is implicit and Faust-like: when the agent asks for more input, everything
delivered so far has been processed, so the runtime flushes the agent's outputs and, once the
broker confirms them, commits the positions up to the first record not yet handed out. One
event at a time, this happens when the buffer runs dry; with ``take``, at every batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from events import AnyEvent


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded input event and where it came from."""

    stream: str
    offset: int
    timestamp_ms: int
    event: AnyEvent
    data: bytes = b""  # the record as stored, for dead letters


class Batch(list[AnyEvent]):
    """A list of events (as Faust's ``take`` yields) that also knows its deliveries."""

    def __init__(self, deliveries: list[Delivery]) -> None:
        super().__init__(d.event for d in deliveries)
        self.deliveries = deliveries

    @property
    def positions(self) -> dict[str, int]:
        """The last offset per input stream covered by this batch."""
        out: dict[str, int] = {}
        for d in self.deliveries:
            out[d.stream] = d.offset
        return out


class Source(Protocol):
    """What a stream needs from its partition worker."""

    partition: int

    @property
    def isolating(self) -> bool:
        """True while a failed batch is re-processed one event at a time."""

    async def next_chunk(self, timeout: float | None) -> list[Delivery] | None:
        """Decoded deliveries; ``None`` on timeout; raises StopAsyncIteration when stopping."""

    async def flush(self, buffered: Sequence[Delivery] = ()) -> None:
        """Make the outputs of everything delivered so far durable, then commit positions
        up to (not including) the ``buffered`` deliveries not yet handed to the agent."""


class Stream:
    def __init__(self, source: Source, name: str) -> None:
        self._source = source
        self._buffer: deque[Delivery] = deque()
        self.agent = name
        self.current: Delivery | None = None
        self._batch: list[Delivery] | None = None

    @property
    def working_on(self) -> list[Delivery]:
        """What the agent was last handed: the current event, or the current batch."""
        if self._batch is not None:
            return self._batch
        return [] if self.current is None else [self.current]

    @property
    def buffered(self) -> list[Delivery]:
        """Deliveries read from the log but not yet handed to the agent."""
        return list(self._buffer)

    @property
    def partition(self) -> int:
        return self._source.partition

    async def _fill(self, timeout: float | None) -> bool:
        chunk = await self._source.next_chunk(timeout)
        if chunk is None:
            return False
        self._buffer.extend(chunk)
        return True

    async def _next(self) -> Delivery:
        while not self._buffer:
            self.current = self._batch = None
            await self._source.flush()
            await self._fill(None)
        item = self.current = self._buffer.popleft()
        return item

    def __aiter__(self) -> AsyncIterator[AnyEvent]:
        return self.events()

    async def events(self) -> AsyncIterator[AnyEvent]:
        while True:
            try:
                item = await self._next()
            except StopAsyncIteration:
                return
            yield item.event

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Like iterating the stream, with each event's stream, offset and timestamp."""
        while True:
            try:
                yield await self._next()
            except StopAsyncIteration:
                return

    async def take(self, max_count: int, within: float) -> AsyncIterator[Batch]:
        """Batches of up to ``max_count`` events, waiting at most ``within`` seconds after
        the first event of a batch for the batch to fill."""
        if max_count < 1:
            raise ValueError("max_count must be >= 1")
        while True:
            items: list[Delivery] = []
            deadline = 0.0
            self.current = self._batch = None
            if self._buffer:
                # the previous batch is processed: make it durable even though more input
                # is already buffered (a backlog must not hold results back)
                await self._source.flush(self._buffer)
            limit = 1 if self._source.isolating else max_count
            try:
                while len(items) < limit:
                    if not self._buffer:
                        if items:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0 or not await self._fill(remaining):
                                break
                            continue
                        await self._source.flush()
                        await self._fill(None)
                        deadline = time.monotonic() + within
                        continue
                    items.append(self._buffer.popleft())
            except StopAsyncIteration:
                if not items:
                    return
            self.current = items[-1]
            self._batch = items
            yield Batch(items)
