"""Rebuilding the views from the log into scratch targets, and swapping them in, against the
real servers."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest
from psycopg import sql

from events import Event
from projections.audit import AuditOptions, audit
from projections.audit.logread import tails
from projections.audit.rebuild import BillingTarget, RebuildStats, catch_up, rebuild, swap_in
from projections.quota_rebuild import QuotaTarget
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from tests.audit.conftest import AGENTS, Env, drop_prefix, run_world
from tests.audit.test_audit_services import invoke
from tests.audit.workload import simulate

pytestmark = pytest.mark.services
TABLES = ("positions", "requests", "usage_ledger", "usage_daily", "usage_period", "prices")


def targets(env: Env) -> tuple[QuotaTarget, BillingTarget]:
    quota = QuotaTarget(env.redis, env.topology, env.prefix, env.prefix + "replay:")
    billing = BillingTarget(
        env.conn, env.settings.postgres_dsn, env.topology, env.schema, env.schema + "_replay"
    )
    return quota, billing


async def rebuilt(env: Env, target: Any) -> RebuildStats:
    ends = await tails(env.log, target.streams)
    return await rebuild(env.log, target, {}, ends, deadletter=env.topology.deadletter.stream(0))


async def differing_rows(env: Env, a: str, b: str) -> dict[str, int]:
    out = {}
    for table in TABLES:
        ta, tb = sql.Identifier(a, table), sql.Identifier(b, table)
        query = sql.SQL(
            "SELECT count(*) FROM ((SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})"
            " UNION ALL (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a})) AS d"
        ).format(a=ta, b=tb)
        cur = await env.conn.execute(query)
        row = await cur.fetchone()
        assert row is not None
        out[table] = row[0]
    return out


async def test_a_view_rebuilt_into_scratch_equals_the_live_one(env: Env) -> None:
    await run_world(env)
    quota, billing = targets(env)
    stats = await rebuilt(env, quota)
    assert stats.read.records == sum((await tails(env.log, quota.streams)).values())
    live, scratch = await env.view().snapshot(), await quota.view.snapshot()
    assert scratch["tenants"] == live["tenants"]
    for stream in env.topology.quota.streams:
        assert scratch["positions"][stream] == live["positions"][stream]
    await rebuilt(env, billing)
    assert await differing_rows(env, env.schema, billing.scratch) == dict.fromkeys(TABLES, 0)
    # the rebuilt views pass the audit too
    result = await audit(
        env.log, env.topology, AuditOptions(), billing=(env.conn, billing.scratch), quota=quota.view
    )
    assert result.ok, [str(d) for d in result.findings.discrepancies[:5]]
    await drop_prefix(env.redis, quota.scratch)

    # the command, with bounds: up to a stored position, inclusive
    stream = env.topology.requests.stream(0)
    out = await invoke(
        env, "replay", "quota", "--to", f"{stream.removeprefix(env.topology.prefix)}:9"
    )
    assert out.exit_code == 0, out.output
    assert "records/s" in out.output
    assert (await quota.view.positions([stream]))[stream] == 9
    out = await invoke(env, "replay", "billing", "--from", "2020-01-01", "--into", "x_y")
    assert out.exit_code == 0, out.output
    assert await differing_rows(env, env.schema, "x_y") == dict.fromkeys(TABLES, 0)
    await env.conn.execute("DROP SCHEMA x_y CASCADE")
    assert (await invoke(env, "replay", "billing", "--swap", "--to", "quota-0:3")).exit_code == 2
    assert (await invoke(env, "replay", "quota", "--from", "nowhere-0:3")).exit_code == 2


async def test_swap_keeps_the_events_arriving_during_the_rebuild(env: Env) -> None:
    first = await run_world(env, seed=5)
    later = simulate(
        env.topology,
        random.Random(6),
        tenants=4,
        requests=300,
        start=first.end + timedelta(minutes=2),
        prefix="late",
    )
    # the later traffic, cut into batches that interleave the streams (each stays in order)
    order = [s for s, evs in later.inputs().items() for _ in evs]
    random.Random(1).shuffle(order)
    pending = {s: list(evs) for s, evs in later.inputs().items()}
    batches: list[dict[str, list[Event]]] = []
    for i in range(0, len(order), 40):
        batch: dict[str, list[Event]] = {}
        for s in order[i : i + 40]:
            batch.setdefault(s, []).append(pending[s].pop(0))
        batches.append(batch)
    third = len(batches) // 3

    async def trickle(part: list[dict[str, list[Event]]]) -> None:
        for batch in part:
            await env.publish(batch)
            await asyncio.sleep(0.05)

    expected = sum(len(evs) for w in (first, later) for evs in w.decisions().values())
    app = env.app()
    stop = asyncio.Event()
    agents = asyncio.create_task(
        AgentRunner(app, AGENTS, StaticOwnership(), interval=0.05).run(stop)
    )
    try:
        quota, billing = targets(env)
        during = asyncio.create_task(trickle(batches[:third]))  # while the rebuilds run
        rebuilt_to = 0
        for target in (quota, billing):
            stats = await rebuilt(env, target)
            rebuilt_to = max(rebuilt_to, stats.read.records)
        await env.publish(batches[third])  # after the rebuilds read their ends, before the swaps
        for target in (quota, billing):
            await swap_in(env.log, target, deadletter=env.topology.deadletter.stream(0))
        await during
        await trickle(batches[third + 1 :])  # after the swaps
        async with asyncio.timeout(90):
            while not await env.caught_up(expected):
                assert not agents.done(), agents.exception()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(agents, 60)
        await app.close()
    # the scratch targets became the live views
    assert await env.redis.exists(quota.scratch + "pos") == 0
    cur = await env.conn.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (billing.scratch,)
    )
    assert await cur.fetchone() == (0,)
    # and they hold every event: those before, during and after the rebuild
    result = await env.audit()
    assert result.ok, [str(d) for d in result.findings.discrepancies[:5]]
    assert result.findings.tallies["decision"].checked == expected
    assert len(result.tenants) == 9
    assert result.stats.records > rebuilt_to


async def test_a_swap_catches_up_with_a_live_view_that_is_ahead(env: Env) -> None:
    await run_world(env)
    before = await env.audit()
    assert before.ok
    quota, billing = targets(env)
    deadletter = env.topology.deadletter.stream(0)
    for target in (quota, billing):
        ends = {s: n // 2 for s, n in (await tails(env.log, target.streams)).items()}
        await rebuild(env.log, target, {}, ends, deadletter=deadletter)
    catch_ups = 0

    async def counted() -> int:
        nonlocal catch_ups
        catch_ups += 1
        return await catch_up_to_tails(env, billing)

    # Redis: the live view is ahead, so nothing is swapped and the streams behind are named
    result = await quota.swap(counted)
    assert not result.swapped
    assert set(result.lagging) >= set(env.topology.quota.streams)
    assert (await swap_in(env.log, quota, deadletter=deadletter)).swapped
    # PostgreSQL: the scratch schema catches up while the live positions are locked
    assert (await billing.swap(counted)).swapped
    assert catch_ups == 1
    after = await env.audit()
    assert after.ok, [str(d) for d in after.findings.discrepancies[:5]]
    assert after.tenants == before.tenants


async def catch_up_to_tails(env: Env, target: Any) -> int:
    return await catch_up(env.log, target, deadletter=env.topology.deadletter.stream(0))
