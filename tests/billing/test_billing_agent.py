"""The billing projection agents against the real broker and PostgreSQL, with SIGKILLs."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from psycopg import AsyncConnection, sql

from events import encode
from projections.billing import positions, totals
from quotaflow.settings import Settings
from streams.rabbit_log import RabbitEventLog
from streams.topics import Topology
from tests.billing.builder import LogBuilder
from tests.billing.reference import flat, settlements, tenant_totals
from tests.runtime.processes import kill, spawn_agent, terminate

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
async def schema(unique: str, settings: Settings) -> AsyncIterator[str]:
    name = f"billing_{unique.replace('-', '_')}"
    yield name
    async with await AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


async def stored(settings: Settings, schema: str, streams: list[str]) -> dict[str, int]:
    try:
        async with await AsyncConnection.connect(settings.postgres_dsn) as conn:
            return await positions(conn, schema, streams)
    except Exception:  # the schema is not migrated yet
        return dict.fromkeys(streams, -1)


async def test_killed_mid_batch_the_view_still_equals_the_events(
    rabbit_log: RabbitEventLog, topology: Topology, schema: str, settings: Settings, tmp_path: Path
) -> None:
    builder = LogBuilder(partitions=2)
    builder.topology = topology
    rng = random.Random(11)
    builder.price("llama-8b", "0.0005", "0.0015")
    builder.price("smollm2", "0.0001", "0.0002")
    builder.traffic(rng, 14_000, gap_s=20)
    lasts: dict[str, int] = {}
    for stream, events in builder.streams.items():
        payloads = [encode(e) for e in events]
        for i in range(0, len(payloads), 5000):
            await rabbit_log.append(stream, payloads[i : i + 5000])
        lasts[stream] = len(payloads) - 1
    total = sum(v + 1 for v in lasts.values())
    assert total >= 50_000
    streams = sorted(lasts)

    env = {
        "QUOTAFLOW_STREAM_PREFIX": topology.prefix,
        "QUOTAFLOW_PARTITIONS": "2",
        "QUOTAFLOW_BILLING_SCHEMA": schema,
    }
    agents = ["billing", "billing-catalog"]
    factory = "quotaflow.wiring:build_app"
    log_file = tmp_path / "billing.log"

    async def applied() -> int:
        return sum(v + 1 for v in (await stored(settings, schema, streams)).values())

    kills = 0
    for _ in range(8):
        proc = spawn_agent(agents, env, log=log_file, factory=factory)
        before = await applied()
        deadline = time.monotonic() + 60
        while await applied() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # soon after the first commit: a 5,000-event batch commits every ~0.2 s on an idle box
        await asyncio.sleep(rng.uniform(0.0, 0.15))
        kill(proc)
        now = await applied()
        if 0 < now < total:
            kills += 1
        if kills >= 3 or now >= total:
            break
    assert kills >= 3, log_file.read_text()[-3000:]

    proc = spawn_agent(agents, env, log=log_file, factory=factory)
    try:
        deadline = time.monotonic() + 180
        while await applied() < total:
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            await asyncio.sleep(0.5)
    finally:
        assert terminate(proc) == 0
    async with await AsyncConnection.connect(settings.postgres_dsn) as conn:
        found = await totals(conn, schema)
        ledger = await totals(conn, schema, source="usage_ledger")
        daily = await totals(conn, schema, source="usage_daily")
    expected = tenant_totals(builder.events())
    assert flat(found) == expected
    assert flat(ledger) == expected
    assert flat(daily) == expected
    assert sum(t.requests for t in ledger.values()) == len(settlements(builder.events()))
