"""Reading the log back for rebuilds, replays and audits: decoded batches with progress.

Views are rebuilt stream by stream: every projection here keeps per-stream positions and
is order-independent across streams (see the billing and quota views), so a rebuild reads
each stream once, front to back, in large batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from events import AnyEvent, DecodeError, decode
from streams.log import EventLog, Position, read_until_tail

Item = tuple[str, int, AnyEvent]
T = TypeVar("T")
#: Called with the number of records read since the last call.
Advance = Callable[[int], None]


@dataclass
class ReadStats:
    records: int = 0
    events: int = 0
    undecodable: list[tuple[str, int, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def tails(log: EventLog, streams: Sequence[str]) -> dict[str, int]:
    return {s: await log.tail(s) for s in streams}


async def read_streams(
    log: EventLog,
    streams: Sequence[str],
    *,
    start: dict[str, Position] | None = None,
    end: dict[str, int] | None = None,
    batch: int = 5000,
    stats: ReadStats | None = None,
    advance: Advance | None = None,
) -> AsyncIterator[list[Item]]:
    """Batches of ``(stream, offset, event)`` from each stream up to its ``end`` (default: its
    tail now). Records that do not decode are counted in ``stats`` and skipped."""
    stats = stats if stats is not None else ReadStats()
    ends = end if end is not None else await tails(log, streams)
    for stream in streams:
        pending: list[Item] = []
        begin = (start or {}).get(stream, Position.first())
        async for records in read_until_tail(log, stream, begin, batch=batch, end=ends[stream]):
            for r in records:
                try:
                    pending.append((stream, r.offset, decode(r.data)))
                except DecodeError as exc:
                    stats.undecodable.append((stream, r.offset, exc.reason))
            stats.records += len(records)
            if advance is not None:
                advance(len(records))
            if len(pending) >= batch:
                stats.events += len(pending)
                yield pending
                pending = []
        if pending:
            stats.events += len(pending)
            yield pending


async def overlapped(source: AsyncIterator[T], ahead: int = 2) -> AsyncIterator[T]:
    """Iterate ``source`` in a task of its own, up to ``ahead`` items in advance, so reading
    the log overlaps with whatever the consumer does with each item."""
    queue: asyncio.Queue[tuple[bool, object]] = asyncio.Queue(maxsize=ahead)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put((True, item))
            await queue.put((False, None))
        except Exception as exc:
            await queue.put((False, exc))

    task = asyncio.create_task(pump())
    try:
        while True:
            more, item = await queue.get()
            if not more:
                if isinstance(item, Exception):
                    raise item
                return
            yield item  # type: ignore[misc]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
