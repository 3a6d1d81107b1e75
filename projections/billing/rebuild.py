"""Rebuild the billing view from the log into an empty schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from projections.billing.migrate import reset
from projections.billing.projection import apply
from projections.replay import Advance, ReadStats, overlapped, read_streams
from streams.log import EventLog


async def rebuild(
    log: EventLog,
    conn: AsyncConnection[Any],
    schema: str,
    streams: Sequence[str],
    *,
    ends: dict[str, int],
    advance: Advance | None = None,
    batch: int = 20_000,
) -> ReadStats:
    """Drop ``schema``, recreate it, and apply every event of ``streams`` up to ``ends``.

    The live agents resume from the positions this writes, so rebuilding the live schema
    while the billing agents are stopped is a complete repair."""
    await reset(conn, schema)
    stats = ReadStats()
    batches = read_streams(log, streams, end=ends, batch=batch, stats=stats, advance=advance)
    async for items in overlapped(batches):
        await apply(conn, items, schema)
    return stats
