"""The billing projection: batches of events → PostgreSQL, exactly once.

:func:`apply` writes a batch of ``(stream, offset, event)`` and the stream positions it
covers in ONE transaction. It first locks the positions of the batch's streams; an event at
or below its stream's stored position (or repeated within the batch) is skipped. So a batch
applied twice changes nothing, and a crash at any point leaves the view and its positions
exactly as they were after the last committed batch.

Writes are set-based: the rows of each table are COPYed (binary) into a session-local staging
table, then merged with one ``INSERT … SELECT … ON CONFLICT`` per table; the ledger and both
aggregates in a single statement (the aggregates grow only by the ledger rows that were really
inserted, so a settlement seen twice is counted once). COPY is used rather than array
parameters (``unnest``) because psycopg dumps Python lists of timestamps and UUIDs as arrays
at tens of microseconds per row, more than ten times the cost of COPY.

A batch costs a handful of round trips, whatever its size: BEGIN, one pipeline (staging
tables, positions locked), one COPY per table that has rows, one pipeline (merges, positions
stored), COMMIT. Batches of a few thousand events amortize them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, LiteralString

from psycopg import AsyncConnection, AsyncCursor, sql

from events import Event
from projections.billing.db import Target, connection
from projections.billing.migrate import DEFAULT_SCHEMA
from projections.billing.rows import (
    GROUPS,
    LEDGER_COLUMNS,
    PRICE_COLUMNS,
    REQUEST_COLUMNS,
    SHARED,
    Column,
    columns_of,
    fold,
)

Item = tuple[str, int, Event]


async def apply(target: Target, items: Sequence[Item], schema: str = DEFAULT_SCHEMA) -> int:
    """Apply a batch in one transaction; returns how many of its events were new.

    ``target`` is a connection (its transaction is committed here unless the caller has one
    open, which then decides) or a pool (a connection is borrowed for the batch). Streams may
    be interleaved in any way; within a stream, an item at or below an offset already applied
    (stored, or earlier in the batch) is taken for a redelivery and skipped.
    """
    if not items:
        return 0
    async with connection(target) as conn:
        return await _apply(conn, items, schema)


async def positions(
    target: Target, schema: str = DEFAULT_SCHEMA, streams: Iterable[str] = ()
) -> dict[str, int]:
    """The stored position of each of ``streams``: the last applied offset, -1 if none."""
    found = dict.fromkeys(streams, -1)
    async with connection(target) as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(_sql(schema).select_positions, (list(found),))
        for stream, offset in await cur.fetchall():
            found[stream] = offset
    return found


async def _apply(conn: AsyncConnection[Any], items: Sequence[Item], schema: str) -> int:
    q = _sql(schema)
    streams = sorted({stream for stream, _, _ in items})
    async with conn.transaction(), conn.cursor() as cur, conn.cursor() as lock:
        # One round trip (pipeline): staging tables ready, the streams' positions locked.
        async with conn.pipeline():
            for staging in STAGING:
                await cur.execute(staging.create)
            await cur.execute(q.ensure_positions, (streams,))
            await lock.execute(q.lock_positions, (streams,))
        heads: dict[str, int] = dict(await lock.fetchall())
        stored = dict(heads)
        fresh: list[Event] = []
        for stream, offset, event in items:
            if offset > heads[stream]:
                heads[stream] = offset
                fresh.append(event)
        if not fresh:
            return 0
        rows = fold(fresh)
        if rows.requests:
            await _stage(cur, REQUESTS_IN, rows.requests.values())
        if rows.ledger:
            await _stage(cur, LEDGER_IN, rows.ledger.values())
        if rows.prices:
            await _stage(cur, PRICES_IN, rows.prices.values())
        # One more round trip: merge what was staged, store the new positions.
        async with conn.pipeline():
            if rows.requests:
                await cur.execute(q.upsert_requests)
            if rows.ledger:
                await cur.execute(q.insert_ledger)
            if rows.prices:
                await cur.execute(q.upsert_prices)
            moved = [(s, o) for s, o in heads.items() if o != stored[s]]
            await cur.execute(q.store_positions, columns_of(moved, 2))
    return len(fresh)


def _names(columns: Sequence[Column]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)


def _render(template: LiteralString, **parts: sql.Composable) -> bytes:
    """A statement composed once and kept as bytes: composing the requests upsert, with its
    ~150 identifiers, costs more client CPU than executing it. The names are our own ASCII
    identifiers, so rendering needs no connection."""
    return sql.SQL(template).format(**parts).as_bytes(None)


class _Staging:
    """A session-local temporary table that a batch is COPYed into before it is merged."""

    def __init__(self, name: str, columns: Sequence[Column]) -> None:
        table = sql.Identifier("pg_temp", name)
        self.columns = columns
        self.types = [pg_type for _, pg_type in columns]
        self.create = _render(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({columns}) ON COMMIT DELETE ROWS",
            name=sql.Identifier(name),
            columns=sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns
            ),
        )
        self.copy = _render(
            "COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)", table=table, cols=_names(columns)
        )
        # Merging statements read the staged rows through this, which also empties the table,
        # so a second batch in the same (caller's) transaction never sees the first one's rows.
        self.take = sql.SQL("DELETE FROM {} RETURNING {}").format(table, _names(columns))


REQUESTS_IN = _Staging("billing_requests_in", REQUEST_COLUMNS)
LEDGER_IN = _Staging("billing_ledger_in", LEDGER_COLUMNS)
PRICES_IN = _Staging("billing_prices_in", PRICE_COLUMNS)
STAGING = (REQUESTS_IN, LEDGER_IN, PRICES_IN)


async def _stage(cur: AsyncCursor[Any], staging: _Staging, rows: Iterable[Sequence[Any]]) -> None:
    async with cur.copy(staging.copy) as copy:
        copy.set_types(staging.types)
        for row in rows:
            await copy.write_row(row)


class _Statements:
    """The statements of one schema."""

    def __init__(self, schema: str) -> None:
        positions = sql.Identifier(schema, "positions")
        self.select_positions = _render(
            "SELECT stream, last_offset FROM {t} WHERE stream = ANY(%s::text[])", t=positions
        )
        self.ensure_positions = _render(
            "INSERT INTO {t} (stream, last_offset) SELECT unnest(%s::text[]), -1"
            " ON CONFLICT (stream) DO NOTHING",
            t=positions,
        )
        self.lock_positions = _render(
            "SELECT stream, last_offset FROM {t} WHERE stream = ANY(%s::text[]) FOR UPDATE",
            t=positions,
        )
        self.store_positions = _render(
            "UPDATE {t} AS p SET last_offset = v.last_offset"
            " FROM unnest(%s::text[], %s::bigint[]) AS v(stream, last_offset)"
            " WHERE p.stream = v.stream",
            t=positions,
        )

        # First event of each type wins: a group is overwritten only while its marker is NULL.
        sets = [
            sql.SQL("{c} = coalesce(r.{c}, EXCLUDED.{c})").format(c=sql.Identifier(c))
            for c, _ in SHARED
        ]
        for group in GROUPS.values():
            marker = sql.Identifier(group[0][0])
            sets += [
                sql.SQL("{c} = CASE WHEN r.{m} IS NULL THEN EXCLUDED.{c} ELSE r.{c} END").format(
                    c=sql.Identifier(c), m=marker
                )
                for c, _ in group
            ]
        self.upsert_requests = _render(
            "WITH src AS ({take}) INSERT INTO {table} AS r ({cols}) SELECT * FROM src"
            " ON CONFLICT (request_id) DO UPDATE SET {sets}",
            take=REQUESTS_IN.take,
            table=sql.Identifier(schema, "requests"),
            cols=_names(REQUESTS_IN.columns),
            sets=sql.SQL(", ").join(sets),
        )

        totals = sql.SQL(
            "SELECT tenant_id, {key}, model, count(*), sum(prompt_tokens), sum(completion_tokens)"
            " FROM ins GROUP BY tenant_id, {key}, model"
            " ON CONFLICT (tenant_id, {key}, model) DO UPDATE SET"
            " requests = a.requests + EXCLUDED.requests,"
            " prompt_tokens = a.prompt_tokens + EXCLUDED.prompt_tokens,"
            " completion_tokens = a.completion_tokens + EXCLUDED.completion_tokens"
        )
        self.insert_ledger = _render(
            "WITH src AS ({take}), ins AS ("
            "INSERT INTO {ledger} ({cols}) SELECT * FROM src"
            " ON CONFLICT (event_id) DO NOTHING"
            " RETURNING tenant_id, model, day, period, prompt_tokens, completion_tokens"
            "), daily AS ("
            "INSERT INTO {daily} AS a (tenant_id, day, model, requests, prompt_tokens,"
            " completion_tokens) {daily_totals} RETURNING 1"
            ") INSERT INTO {period} AS a (tenant_id, period, model, requests, prompt_tokens,"
            " completion_tokens) {period_totals}",
            take=LEDGER_IN.take,
            ledger=sql.Identifier(schema, "usage_ledger"),
            cols=_names(LEDGER_COLUMNS),
            daily=sql.Identifier(schema, "usage_daily"),
            daily_totals=totals.format(key=sql.Identifier("day")),
            period=sql.Identifier(schema, "usage_period"),
            period_totals=totals.format(key=sql.Identifier("period")),
        )
        # The catalog is one stream, applied in order: a later price for the same instant wins.
        self.upsert_prices = _render(
            "WITH src AS ({take}) INSERT INTO {table} ({cols}) SELECT * FROM src"
            " ON CONFLICT (model, effective_from) DO UPDATE SET"
            " prompt_per_1k = EXCLUDED.prompt_per_1k,"
            " completion_per_1k = EXCLUDED.completion_per_1k,"
            " currency = EXCLUDED.currency, event_id = EXCLUDED.event_id",
            take=PRICES_IN.take,
            table=sql.Identifier(schema, "prices"),
            cols=_names(PRICE_COLUMNS),
        )


@lru_cache(maxsize=32)
def _sql(schema: str) -> _Statements:
    return _Statements(schema)
