"""The event log port: what every log backend offers the rest of quotaflow.

A *stream* is one ordered, append-only sequence of records (one partition of a topic).
Offsets are assigned by the log, start at 0 and increase; they need not be dense (RabbitMQ
offset-tracking entries take offset numbers too), so never count records by subtracting
offsets.

Backends: :class:`streams.rabbit_log.RabbitEventLog` (RabbitMQ Streams over rstream),
:class:`streams.kafka_log.KafkaEventLog` (Kafka over aiokafka, one single-partition topic per
stream) and :class:`streams.memory_log.MemoryEventLog` (tests of pure logic). All three pass
``tests/streams/contract.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


class LogError(Exception):
    """A log operation failed in a way the caller should see (not a transient hiccup)."""


class StreamNotFound(LogError):
    pass


class PublishRejected(LogError):
    """The broker refused records (too large, access refused, …). Retrying will not help."""


@dataclass(frozen=True, slots=True)
class Record:
    stream: str
    offset: int
    timestamp_ms: int
    data: bytes


PositionKind = Literal["first", "last", "next", "offset", "timestamp"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a subscription starts: the first record, the last chunk, only new records,
    a given offset, or the first record at/after a time (milliseconds since the epoch)."""

    kind: PositionKind
    value: int = 0

    @classmethod
    def first(cls) -> Position:
        return cls("first")

    @classmethod
    def last(cls) -> Position:
        return cls("last")

    @classmethod
    def next(cls) -> Position:
        return cls("next")

    @classmethod
    def offset(cls, offset: int) -> Position:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        return cls("offset", offset)

    @classmethod
    def timestamp(cls, when: datetime | int) -> Position:
        ms = when if isinstance(when, int) else int(when.timestamp() * 1000)
        return cls("timestamp", ms)

    @classmethod
    def after(cls, committed: int | None) -> Position:
        """Resume after a committed offset (``None``: nothing committed, start at the first)."""
        return cls.first() if committed is None else cls.offset(committed + 1)


class Subscription(Protocol):
    """Batches of records in offset order, until closed. Never skips a record."""

    def __aiter__(self) -> AsyncIterator[list[Record]]: ...

    async def close(self) -> None: ...


class EventLog(Protocol):
    async def create_stream(self, stream: str) -> None:
        """Declare ``stream`` (idempotent)."""

    async def append(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> None:
        """Append and return once every record is durable (confirmed).

        With a named ``publisher`` and strictly increasing ``publishing_ids``, a record whose
        id is not above the publisher's last sequence is dropped as a duplicate, so
        re-sending a batch after a crash stores nothing twice.
        """

    async def submit(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> asyncio.Future[None]:
        """Like ``append``, but return once sent: the future completes on confirmation."""

    async def last_sequence(self, stream: str, publisher: str) -> int:
        """The highest publishing id stored for a named publisher (0 if none)."""

    def subscribe(self, stream: str, start: Position, *, batch: int = 1000) -> Subscription:
        """Records from ``start`` on, for as long as the subscription is open."""

    async def tail(self, stream: str) -> int:
        """One past the last record's offset (0 for an empty stream): a lag reference."""

    async def close(self) -> None: ...


class OffsetStore(Protocol):
    """Committed consumer positions, for consumers whose effect is in the log itself."""

    async def load(self, reference: str, stream: str) -> int | None: ...

    async def store(self, reference: str, stream: str, offset: int) -> None: ...


async def read_until_tail(
    log: EventLog, stream: str, start: Position, *, batch: int = 1000, end: int | None = None
) -> AsyncIterator[list[Record]]:
    """A bounded read: records from ``start`` up to ``end`` (default: the tail right now)."""
    stop = await log.tail(stream) if end is None else end
    if stop == 0 or (start.kind == "offset" and start.value >= stop):
        return
    sub = log.subscribe(stream, start, batch=batch)
    try:
        async for records in sub:
            last = records[-1].offset
            if last >= stop - 1:
                yield [r for r in records if r.offset < stop]
                return
            yield records
    finally:
        await sub.close()
