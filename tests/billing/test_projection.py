"""Applying batches: the lifecycle row, exactly-once, crashes."""

from __future__ import annotations

import random
from typing import Any

import pytest
from psycopg import AsyncConnection, errors, sql
from psycopg_pool import AsyncConnectionPool

from events import ClockTicked, ReservationSettled
from projections.billing import apply, positions, request, totals
from projections.billing.queries import RequestStatus

from .builder import LogBuilder, Outcome
from .reference import flat, tenant_totals
from .tables import snapshot

pytestmark = pytest.mark.services

#: outcome → (status, the stages whose timestamps are set)
PATHS: dict[Outcome, tuple[RequestStatus, set[str]]] = {
    "settled": ("settled", {"requested", "reserved", "completed", "settled"}),
    "completed": ("completed", {"requested", "reserved", "completed"}),
    "rejected": ("rejected", {"requested", "rejected"}),
    "failed": ("released", {"requested", "reserved", "failed", "released"}),
    "expired": ("expired", {"requested", "reserved", "expired"}),
    "pending": ("reserved", {"requested", "reserved"}),
}
STAGES = (
    "requested",
    "reserved",
    "rejected",
    "completed",
    "failed",
    "settled",
    "released",
    "expired",
)


@pytest.mark.parametrize("quota_first", [False, True], ids=["in-order", "quota-stream-first"])
@pytest.mark.parametrize("outcome", list(PATHS))
async def test_the_lifecycle_row_of_every_path(
    conn: AsyncConnection[Any], schema: str, outcome: Outcome, quota_first: bool
) -> None:
    log = LogBuilder()
    rid = log.request("acme", "smollm2", outcome, prompt_tokens=100, completion_tokens=30)
    items = log.items()
    if quota_first:  # the quota stream is read ahead of the requests stream
        items.sort(key=lambda item: not item[0].startswith("t-quota"))
    for item in items:  # one event per batch: the row grows stage by stage
        assert await apply(conn, [item], schema) == 1
    record = await request(conn, rid, schema=schema)
    assert record is not None
    status, stages = PATHS[outcome]
    assert record.status == status
    assert {s for s in STAGES if getattr(record, f"{s}_at") is not None} == stages
    assert (record.tenant_id, record.model) == ("acme", "smollm2")
    assert record.estimated_tokens == 104 + 256
    if outcome == "rejected":
        assert (record.reject_reason, record.rejected_tokens, record.reserved_tokens) == (
            "budget",
            360,
            None,
        )
    else:
        assert record.reserved_tokens == 360
    if outcome == "settled":
        assert (record.settled_prompt_tokens, record.settled_completion_tokens) == (100, 30)
    if outcome in ("settled", "completed"):
        assert (record.prompt_tokens, record.completion_tokens) == (100, 30)
    if outcome == "failed":
        assert (record.failure_reason, record.release_reason) == ("oom", "oom")
    settled = {"acme": (1, 100, 30)} if outcome == "settled" else {}
    assert flat(await totals(conn, schema)) == settled


async def test_events_billing_ignores_still_move_the_position(
    conn: AsyncConnection[Any], schema: str
) -> None:
    tick = ClockTicked(tenant_id="system", partition=0)
    batch = [("t-requests-0", 0, tick), ("t-requests-0", 1, tick)]
    assert await apply(conn, batch, schema) == 2
    assert await positions(conn, schema, ["t-requests-0"]) == {"t-requests-0": 1}
    tables = await snapshot(conn, schema)
    assert all(rows == [] for table, rows in tables.items() if table != "positions")


async def test_an_unknown_request_has_no_record(conn: AsyncConnection[Any], schema: str) -> None:
    log = LogBuilder()
    log.request("acme", "smollm2")
    await apply(conn, log.items(), schema)
    assert await request(conn, log.events()[0].event_id, schema=schema) is None


async def test_applying_the_same_batch_twice_changes_nothing(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = LogBuilder()
    log.traffic(random.Random(1), 200)
    items = log.items()
    assert await apply(conn, items, schema) == len(items)
    once = await snapshot(conn, schema)
    assert await apply(conn, items, schema) == 0
    assert await snapshot(conn, schema) == once
    heads = {stream: len(events) - 1 for stream, events in log.streams.items()}
    assert await positions(conn, schema, [*heads, "t-unknown-0"]) == {**heads, "t-unknown-0": -1}


async def test_overlapping_redelivery_applies_each_event_once(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = LogBuilder()
    log.traffic(random.Random(2), 100)
    items = log.items()
    third = len(items) // 3
    assert await apply(conn, items[: 2 * third], schema) == 2 * third
    # a consumer restarted from older offsets, and a batch with an event repeated inside it
    assert await apply(conn, items[third:] + items[-5:], schema) == len(items) - 2 * third
    assert flat(await totals(conn, schema)) == tenant_totals(log.events())


@pytest.mark.parametrize("same_batch", [True, False], ids=["same-batch", "later-batch"])
async def test_a_settlement_on_the_log_twice_is_charged_once(
    conn: AsyncConnection[Any], schema: str, same_batch: bool
) -> None:
    """The same event published twice (two offsets): the ledger's key on the event id holds."""
    log = LogBuilder()
    log.request("acme", "smollm2", prompt_tokens=7, completion_tokens=3)
    items = log.items()
    stream, offset, settled = next(i for i in items if isinstance(i[2], ReservationSettled))
    again = (stream, offset + 1, settled)
    for batch in [[*items, again]] if same_batch else [items, [again]]:
        assert await apply(conn, batch, schema) == len(batch)
    for source in ("usage_period", "usage_daily", "usage_ledger"):
        found = await totals(conn, schema, source)
        assert (found["acme"].requests, found["acme"].total_tokens) == (1, 10)


async def test_a_crash_inside_a_batch_leaves_the_view_as_it_was(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = LogBuilder()
    log.traffic(random.Random(3), 60)
    items = log.items()
    half = len(items) // 2
    await apply(conn, items[:half], schema)
    before = await snapshot(conn, schema)
    # the database fails late in the batch: after the requests and the ledger were written
    boom = sql.SQL(
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'boom'; END $$;"
        " CREATE TRIGGER boom BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()"
    ).format(f=sql.Identifier(schema, "boom"), t=sql.Identifier(schema, "usage_period"))
    async with conn.transaction():
        await conn.execute(boom)
    with pytest.raises(errors.RaiseException, match="boom"):
        await apply(conn, items[half:], schema)
    async with conn.transaction():
        await conn.execute(
            sql.SQL("DROP FUNCTION {} CASCADE").format(sql.Identifier(schema, "boom"))
        )
    assert await snapshot(conn, schema) == before
    assert await apply(conn, items, schema) == len(items) - half
    assert flat(await totals(conn, schema)) == tenant_totals(log.events())


async def test_a_pool_is_accepted_wherever_a_connection_is(dsn: str, schema: str) -> None:
    log = LogBuilder()
    log.traffic(random.Random(4), 20)
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        assert await apply(pool, log.items(), schema) == len(log.items())
        heads = await positions(pool, schema, log.streams)
        assert heads == {stream: len(events) - 1 for stream, events in log.streams.items()}
        assert flat(await totals(pool, schema)) == tenant_totals(log.events())
