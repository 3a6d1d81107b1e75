"""Rebuild a view from the log into a scratch target, catch up, and swap it in (blue/green).

A :class:`RebuildTarget` is one view under a scratch name: the billing view in a scratch
PostgreSQL schema (:class:`BillingTarget`) or the Redis quota view under a scratch key prefix
(:class:`projections.quota_rebuild.QuotaTarget`). Both store their stream positions in the
same atomic step as their rows, exactly like the live views.

:func:`rebuild` empties the target and applies the streams from the starts to the ends.
:func:`swap_in` then makes the scratch view the live one without losing the events that
arrived meanwhile: it catches the scratch view up to the current tails and asks the target to
swap, which succeeds only when the scratch view is at or past the live view in every stream
(the live agent then continues from the scratch positions); if the live agent got ahead in
the meantime, it catches up again and retries.

**Billing** swaps in one transaction: it locks the live ``positions`` table (the first thing
every billing batch touches, so the live agents wait at their next batch), compares the
positions, catches the scratch schema up while holding the lock if it is behind, then
:func:`~projections.billing.promote` drops the live schema and renames the scratch one.
The waiting agents' statements resolve the schema name again once the lock is released and
write into the new schema; their positions are the scratch ones, so they continue where the
rebuild stopped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg import AsyncConnection, sql

from projections.audit.logread import (
    Advance,
    Chunk,
    dead_lettered,
    gc_paused,
    read_range,
    skips_of,
    tails,
)
from projections.billing import apply, positions, promote, reset
from projections.replay import ReadStats, overlapped
from streams.log import EventLog, Position
from streams.topics import Topology

CatchUp = Callable[[], Awaitable[int]]


@dataclass
class SwapResult:
    swapped: bool
    detail: str = ""
    #: stream -> (live position, scratch position) where the scratch view was behind
    lagging: dict[str, tuple[int, int]] = field(default_factory=dict)


class SwapError(RuntimeError):
    pass


class RebuildTarget(Protocol):
    kind: str
    agents: tuple[str, ...]  # the live agents whose dead letters a rebuild skips too
    streams: list[str]
    wanted: tuple[bytes, ...] | None
    accept: frozenset[str] | None

    @property
    def description(self) -> str: ...

    async def reset(self) -> None: ...

    async def apply(self, chunk: Chunk) -> int: ...

    async def positions(self) -> dict[str, int]: ...

    async def swap(self, catch_up: CatchUp) -> SwapResult: ...


@dataclass
class RebuildStats:
    read: ReadStats = field(default_factory=ReadStats)
    applied: int = 0


async def rebuild(
    log: EventLog,
    target: RebuildTarget,
    starts: Mapping[str, Position],
    ends: Mapping[str, int],
    *,
    deadletter: str | None = None,
    advance: Advance | None = None,
    batch: int = 20_000,
    stats: RebuildStats | None = None,
) -> RebuildStats:
    """Empty ``target`` and apply each of its streams from ``starts`` up to ``ends``."""
    stats = stats if stats is not None else RebuildStats()
    await target.reset()
    dead = await dead_lettered(log, deadletter, target.agents) if deadletter else set()
    with gc_paused():
        await _apply_ranges(log, target, starts, ends, dead, advance, batch, stats)
    return stats


async def _apply_ranges(
    log: EventLog,
    target: RebuildTarget,
    starts: Mapping[str, Position],
    ends: Mapping[str, int],
    dead: set[tuple[str, int]],
    advance: Advance | None,
    batch: int,
    stats: RebuildStats,
) -> None:
    for stream in target.streams:
        chunks = read_range(
            log,
            stream,
            starts.get(stream, Position.first()),
            ends[stream],
            batch=batch,
            stats=stats.read,
            advance=advance,
            skip=skips_of(dead, stream),
            wanted=target.wanted,
            accept=target.accept,
        )
        async for chunk in overlapped(chunks):
            stats.applied += await target.apply(chunk)


async def catch_up(
    log: EventLog,
    target: RebuildTarget,
    *,
    deadletter: str | None = None,
    advance: Advance | None = None,
    batch: int = 20_000,
    stats: RebuildStats | None = None,
) -> int:
    """Apply what the log holds past the target's positions, up to the tails now."""
    stats = stats if stats is not None else RebuildStats()
    before = stats.read.records
    stored = await target.positions()
    ends = await tails(log, target.streams)
    starts = {s: Position.after(p if p >= 0 else None) for s, p in stored.items()}
    dead = await dead_lettered(log, deadletter, target.agents) if deadletter else set()
    await _apply_ranges(log, target, starts, ends, dead, advance, batch, stats)
    return stats.read.records - before


async def swap_in(
    log: EventLog,
    target: RebuildTarget,
    *,
    deadletter: str | None = None,
    attempts: int = 20,
    advance: Advance | None = None,
    stats: RebuildStats | None = None,
) -> SwapResult:
    """Catch ``target`` up and make it the live view; see the module docstring."""
    stats = stats if stats is not None else RebuildStats()

    async def again() -> int:
        return await catch_up(log, target, deadletter=deadletter, advance=advance, stats=stats)

    result = SwapResult(swapped=False)
    for _ in range(attempts):
        await again()
        result = await target.swap(again)
        if result.swapped:
            return result
    raise SwapError(f"the live view kept getting ahead of the rebuilt one: {result.lagging}")


# --- the billing view ---------------------------------------------------------------------


def billing_streams(topology: Topology) -> list[str]:
    return [*topology.requests.streams, *topology.quota.streams, *topology.catalog.streams]


class BillingTarget:
    """The billing view in a scratch schema. ``conn`` applies batches (autocommitting each
    in its own transaction); the swap opens a second connection from ``dsn``."""

    kind: str = "billing"
    agents: tuple[str, ...] = ("billing", "billing-catalog")
    wanted: tuple[bytes, ...] | None = None
    accept: frozenset[str] | None = None

    def __init__(
        self,
        conn: AsyncConnection[Any],
        dsn: str,
        topology: Topology,
        live: str,
        scratch: str,
        *,
        lock_timeout_s: float = 30.0,
    ) -> None:
        if live == scratch:
            raise ValueError("the scratch schema must differ from the live one")
        self.conn = conn
        self.dsn = dsn
        self.live = live
        self.scratch = scratch
        self.streams = billing_streams(topology)
        self.lock_timeout_s = lock_timeout_s

    @property
    def description(self) -> str:
        return f"PostgreSQL schema {self.scratch!r}"

    @property
    def live_description(self) -> str:
        return f"PostgreSQL schema {self.live!r}"

    async def reset(self) -> None:
        await reset(self.conn, self.scratch)

    async def apply(self, chunk: Chunk) -> int:
        if not chunk.items:
            return 0
        stream = chunk.stream
        return await apply(self.conn, [(stream, o, e) for o, e in chunk.items], self.scratch)

    async def positions(self) -> dict[str, int]:
        return await positions(self.conn, self.scratch, self.streams)

    async def swap(self, catch_up: CatchUp) -> SwapResult:
        async with await AsyncConnection.connect(self.dsn) as conn, conn.transaction():
            await conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{int(self.lock_timeout_s * 1000)}ms")
                )
            )
            live = await _live_positions(conn, self.live)
            lagging = await self._lagging(live)
            if lagging:  # the live agents wait on the lock: this catch-up is the last one
                await catch_up()
                lagging = await self._lagging(live)
                if lagging:
                    raise SwapError(f"the scratch view is still behind the live one: {lagging}")
            await promote(conn, self.scratch, self.live)
        return SwapResult(swapped=True, detail=f"schema {self.scratch!r} is now {self.live!r}")

    async def _lagging(self, live: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        mine = await positions(self.conn, self.scratch, [*self.streams, *live])
        return {s: (p, mine[s]) for s, p in live.items() if mine[s] < p}


async def _live_positions(conn: AsyncConnection[Any], schema: str) -> dict[str, int]:
    """Lock the live ``positions`` table and read it; empty if the live schema is missing."""
    cur = await conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'positions'", (schema,)
    )
    if await cur.fetchone() is None:
        return {}
    table = sql.Identifier(schema, "positions")
    await conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
    cur = await conn.execute(sql.SQL("SELECT stream, last_offset FROM {}").format(table))
    return {stream: offset for stream, offset in await cur.fetchall()}


def describe_ends(ends: Mapping[str, int], starts: Mapping[str, Position]) -> Sequence[str]:
    out = []
    for stream, end in ends.items():
        start = starts.get(stream, Position.first())
        first = start.value if start.kind == "offset" else 0
        out.append(f"{stream}: {first}..{end - 1}" if end > first else f"{stream}: nothing")
    return out
