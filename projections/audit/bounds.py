"""Where a replay starts and ends: ``--from`` / ``--to`` bounds.

A bound is either a time, which applies to every stream, or one stream's offset:

* ``2025-01-30T22:00:00Z`` (ISO 8601; a date is its UTC midnight, a time without a zone is
  UTC): the time the log *stored* the records (the broker's timestamp, what RabbitMQ can
  start a subscription at), not the events' own ``occurred_at``;
* ``requests-0:1200``: offset 1200 of stream ``requests-0`` (the deployment's stream prefix
  may be left out).

``--from`` is inclusive (start at that record); ``--to`` is inclusive too (a stored position
``requests-0:1200`` means "up to and including offset 1200"; ``--to TIME`` keeps the records
stored at or before TIME). Offsets resolved from a time are exact: the first record whose
timestamp is at or after (for ``--to``: after) the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from streams.log import EventLog, Position, read_until_tail


class BoundError(ValueError):
    """A bound that cannot be parsed or names no stream of the replay."""


@dataclass(frozen=True, slots=True)
class Bound:
    stream: str | None = None
    offset: int | None = None
    time: datetime | None = None

    def __str__(self) -> str:
        return self.time.isoformat() if self.time is not None else f"{self.stream}:{self.offset}"


def parse_bound(text: str) -> Bound:
    text = text.strip()
    when = _parse_time(text)
    if when is not None:
        return Bound(time=when)
    stream, sep, offset = text.rpartition(":")
    if not sep or not stream or not offset.isdigit():
        raise BoundError(
            f"{text!r} is neither an ISO time nor STREAM:OFFSET (e.g. requests-0:1200)"
        )
    return Bound(stream=stream, offset=int(offset))


def _parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _stream_of(bound: Bound, streams: Sequence[str], prefix: str) -> str:
    assert bound.stream is not None
    for candidate in (bound.stream, prefix + bound.stream):
        if candidate in streams:
            return candidate
    raise BoundError(f"{bound}: no stream {bound.stream!r} in this replay ({', '.join(streams)})")


def _split(
    bounds: Sequence[Bound], streams: Sequence[str], prefix: str, flag: str
) -> tuple[datetime | None, dict[str, int]]:
    times = [b.time for b in bounds if b.time is not None]
    if len(times) > 1:
        raise BoundError(f"{flag} takes at most one time")
    offsets: dict[str, int] = {}
    for b in bounds:
        if b.time is None:
            assert b.offset is not None
            stream = _stream_of(b, streams, prefix)
            if stream in offsets:
                raise BoundError(f"{flag} names {stream} twice")
            offsets[stream] = b.offset
    return (times[0] if times else None), offsets


async def offset_at(log: EventLog, stream: str, ms: int, tail: int, *, after: bool = False) -> int:
    """The first offset whose record was stored at ``ms`` or later (``after``: later than
    ``ms``); ``tail`` if there is none."""
    if tail == 0:
        return 0

    def hit(ts: int) -> bool:
        return ts > ms if after else ts >= ms

    # A subscription at a time past the last chunk would wait for new records: look first.
    last_ts: int | None = None
    async for records in read_until_tail(log, stream, Position.last(), end=tail):
        last_ts = records[-1].timestamp_ms
    if last_ts is None or not hit(last_ts):
        return tail
    async for records in read_until_tail(log, stream, Position.timestamp(ms), end=tail):
        for r in records:
            if hit(r.timestamp_ms):
                return r.offset
    return tail


async def resolve(
    log: EventLog,
    streams: Sequence[str],
    tails: dict[str, int],
    start: Sequence[Bound] = (),
    stop: Sequence[Bound] = (),
    prefix: str = "",
) -> tuple[dict[str, Position], dict[str, int]]:
    """Start positions and end offsets (exclusive) of ``streams`` for these bounds.

    A stream that a bound does not name starts at its first record and ends at its tail;
    an offset bound overrides a time bound for its stream.
    """
    start_time, start_offsets = _split(start, streams, prefix, "--from")
    stop_time, stop_offsets = _split(stop, streams, prefix, "--to")
    starts: dict[str, Position] = {}
    ends: dict[str, int] = {}
    for stream in streams:
        tail = tails[stream]
        if stream in start_offsets:
            first = start_offsets[stream]
        elif start_time is not None:
            first = await offset_at(log, stream, _ms(start_time), tail)
        else:
            first = 0
        if stream in stop_offsets:
            end = min(stop_offsets[stream] + 1, tail)
        elif stop_time is not None:
            end = await offset_at(log, stream, _ms(stop_time), tail, after=True)
        else:
            end = tail
        starts[stream] = Position.offset(first) if first > 0 else Position.first()
        ends[stream] = max(end, 0)
    return starts, ends
