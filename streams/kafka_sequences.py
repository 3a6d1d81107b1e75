"""Publisher sequences on a log without broker-side deduplication (the Kafka backend).

RabbitMQ stores, per stream and named publisher, the highest publishing id it has stored.
Kafka has no such thing without an idempotent producer (and an idempotent producer's
sequence dies with its producer id, so it cannot deduplicate across process restarts).
The Kafka backend writes the publisher's name and the publishing id into each record's
headers instead, and this module finds a publisher's highest stored id by reading them:

* Ids of one publisher increase with the offset (the backend stores only ids above the
  publisher's last one, one batch after the other), so the publisher's highest id is in its
  *last* record: the index scans **backwards from the tail**, in growing windows, until it
  meets a record of that publisher (or the start of the stream: then the answer is 0).
* What has been scanned is remembered per stream as one contiguous range ``[low, high)``
  with the highest id of every publisher seen in it; a later question first scans the new
  records ``[high, tail)``, so repeated questions cost only what was appended since.

The cost of a first question is the distance from the tail back to the publisher's last
record: small for an agent's own output streams, the whole stream for a publisher that has
never written there (once per process and stream: afterwards the range covers it).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Record header keys of a named publisher's records.
PUBLISHER_HEADER = "qf-pub"
SEQUENCE_HEADER = "qf-seq"

_FIRST_WINDOW = 1024
_MAX_WINDOW = 1 << 18

Headers = Sequence[tuple[str, bytes]]


def publisher_headers(publisher: str, publishing_id: int) -> list[tuple[str, bytes]]:
    return [
        (PUBLISHER_HEADER, publisher.encode()),
        (SEQUENCE_HEADER, publishing_id.to_bytes(8, "big")),
    ]


def read_publisher(headers: Headers) -> tuple[str, int] | None:
    """The (publisher, publishing id) a record carries, if it was written by a named one."""
    name: bytes | None = None
    seq: bytes | None = None
    for key, value in headers:
        if key == PUBLISHER_HEADER:
            name = value
        elif key == SEQUENCE_HEADER:
            seq = value
    if name is None or seq is None or len(seq) != 8:
        return None
    return name.decode(), int.from_bytes(seq, "big")


class HeaderReader(Protocol):
    """What the index needs from the log."""

    async def bounds(self, stream: str) -> tuple[int, int]:
        """The first offset still stored and one past the last."""

    def headers(self, stream: str, start: int, end: int) -> AsyncIterator[list[Headers]]:
        """The headers of the records in ``[start, end)``, in offset order."""


@dataclass
class _Scanned:
    low: int
    high: int
    last: dict[str, int] = field(default_factory=dict)

    def add(self, found: Iterable[Headers]) -> None:
        for headers in found:
            pair = read_publisher(headers)
            if pair is not None and pair[1] > self.last.get(pair[0], 0):
                self.last[pair[0]] = pair[1]


class SequenceIndex:
    def __init__(self, reader: HeaderReader) -> None:
        self._reader = reader
        self._scanned: dict[str, _Scanned] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def forget(self, stream: str) -> None:
        """Drop what is known of ``stream`` (it was deleted)."""
        self._scanned.pop(stream, None)

    async def last(self, stream: str, publisher: str) -> int:
        """The highest publishing id ``publisher`` has stored in ``stream`` (0: none)."""
        async with self._locks[stream]:
            begin, end = await self._reader.bounds(stream)
            seen = self._scanned.get(stream)
            if seen is None or end < seen.high:  # new to us, or deleted and created again
                seen = self._scanned[stream] = _Scanned(end, end)
            if seen.high < end:
                await self._scan(stream, seen, max(seen.high, begin), end)
                seen.high = end
            window = _FIRST_WINDOW
            while publisher not in seen.last and seen.low > begin:
                start = max(begin, seen.low - window)
                await self._scan(stream, seen, start, seen.low)
                seen.low = start
                window = min(window * 4, _MAX_WINDOW)
            return seen.last.get(publisher, 0)

    async def _scan(self, stream: str, seen: _Scanned, start: int, end: int) -> None:
        if start >= end:
            return
        async for headers in self._reader.headers(stream, start, end):
            seen.add(headers)
