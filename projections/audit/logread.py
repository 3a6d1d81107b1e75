"""Reading ranges of the log back for rebuilds and audits.

:func:`read_range` reads one stream from a start to an end offset and yields :class:`Chunk`\\ s:
the decoded events with their offsets, and the offset of the last record the chunk covers
(which is what a view's position must move to, even when the chunk's last records were
filtered out). Records that do not decode are counted in the stats and skipped, as the
agents skip (dead-letter) them; records named in ``skip`` (dead letters of the agent being
replayed) are skipped too.

``wanted`` names the event types the caller needs: a record whose bytes contain none of the
names is not decoded at all. Every stored event carries its type name verbatim (the
``type`` field is a plain ASCII string and type names are never renamed, see
:mod:`events.model`), so the test has false positives (a prompt that mentions a type name:
that record is decoded and then dropped by type) but no false negatives.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from events import AnyEvent, DecodeError, decode
from projections.replay import ReadStats
from streams.log import EventLog, Position, read_until_tail
from streams.runtime.deadletter import DeadLetter

#: Called with the number of records read since the last call.
Advance = Callable[[int], None]


@dataclass(slots=True)
class Chunk:
    """Events of one stream, in offset order, and the last offset the chunk covers."""

    stream: str
    items: list[tuple[int, AnyEvent]] = field(default_factory=list)
    last: int = -1


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection for the block.

    A replay allocates millions of small objects and an audit keeps most of them (the
    facts); each full collection walks every one of them, which halves the read rate. The
    objects made here hold no reference cycles, so reference counting frees them all the
    same; collection resumes (if it was on) when the block ends.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def type_filter(types: Iterable[str]) -> tuple[bytes, ...]:
    return tuple(sorted(t.encode() for t in types))


async def read_range(
    log: EventLog,
    stream: str,
    start: Position,
    end: int,
    *,
    batch: int = 5000,
    stats: ReadStats | None = None,
    advance: Advance | None = None,
    skip: frozenset[int] | set[int] = frozenset(),
    wanted: Sequence[bytes] | None = None,
    accept: frozenset[str] | None = None,
) -> AsyncGenerator[Chunk, None]:
    """Chunks of ``stream`` from ``start`` up to (not including) offset ``end``.

    ``accept`` keeps only events of those type names (after decoding); ``wanted`` is the
    cheaper byte-level pre-filter described in the module docstring.
    """
    stats = stats if stats is not None else ReadStats()
    chunk = Chunk(stream)
    fresh = False  # records read since the last chunk was yielded
    async for records in read_until_tail(log, stream, start, batch=batch, end=end):
        items = chunk.items
        for r in records:
            data = r.data
            if skip and r.offset in skip:
                continue
            if wanted is not None and not any(name in data for name in wanted):
                continue
            try:
                event = decode(data)
            except DecodeError as exc:
                stats.undecodable.append((stream, r.offset, exc.reason))
                continue
            if accept is None or event.type in accept:
                items.append((r.offset, event))
        if records:
            chunk.last = records[-1].offset
            fresh = True
        stats.records += len(records)
        if advance is not None:
            advance(len(records))
        if len(items) >= batch:
            stats.events += len(items)
            yield chunk
            chunk, fresh = Chunk(stream, last=chunk.last), False
    if fresh:
        stats.events += len(chunk.items)
        yield chunk


async def dead_lettered(log: EventLog, stream: str, agents: Iterable[str]) -> set[tuple[str, int]]:
    """``(stream, offset)`` of every record that one of ``agents`` dead-lettered."""
    names = set(agents)
    found: set[tuple[str, int]] = set()
    async for records in read_until_tail(log, stream, Position.first()):
        for r in records:
            with contextlib.suppress(ValueError):
                letter = DeadLetter.decode(r.data)
                if letter.agent in names:
                    found.add((letter.stream, letter.offset))
    return found


def skips_of(dead: set[tuple[str, int]], stream: str) -> frozenset[int]:
    return frozenset(offset for s, offset in dead if s == stream)


async def tails(log: EventLog, streams: Sequence[str]) -> dict[str, int]:
    """One past the last offset of each stream, read in the order given."""
    return {s: await log.tail(s) for s in streams}
