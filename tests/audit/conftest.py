"""Real-server fixtures: a topology, a Redis prefix and a billing schema of the test's own,
the real agents run in process, and the simulated traffic published to the real broker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from psycopg import AsyncConnection, errors, sql
from redis.asyncio import Redis

from events import Event, encode
from projections.audit import AuditOptions, AuditResult, audit
from projections.billing import positions
from projections.quota_view import QuotaView
from quotaflow.settings import Settings
from quotaflow.wiring import build_app
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from streams.topics import Topology
from tests.audit.workload import World, simulate

AGENTS = ["quota", "quota-view", "billing", "billing-catalog"]


@dataclass
class Env:
    """One test's deployment: its streams, Redis prefix and billing schema."""

    settings: Settings
    log: RabbitEventLog
    topology: Topology
    redis: Redis
    conn: AsyncConnection[Any]  # autocommit

    @property
    def prefix(self) -> str:
        return self.settings.redis_prefix

    @property
    def schema(self) -> str:
        return self.settings.billing_schema

    def app(self) -> App:
        return build_app(self.settings)

    def view(self, prefix: str | None = None) -> QuotaView:
        return QuotaView(self.redis, self.prefix if prefix is None else prefix)

    async def publish(self, streams: dict[str, list[Event]], batch: int = 2000) -> None:
        for stream, events in streams.items():
            payloads = [encode(e) for e in events]
            for i in range(0, len(payloads), batch):
                await self.log.append(stream, payloads[i : i + batch])

    async def tails(self) -> dict[str, int]:
        streams = [s for t in self.topology.all for s in t.streams]
        return {s: await self.log.tail(s) for s in streams}

    async def caught_up(self, decisions: int | None = None) -> bool:
        """The quota agent has made ``decisions`` decisions and both views applied them."""
        tails = await self.tails()
        quota = self.topology.quota.streams
        if decisions is not None and sum(tails[s] for s in quota) < decisions:
            return False
        billed = [*self.topology.requests.streams, *quota, *self.topology.catalog.streams]
        try:
            stored = await positions(self.conn, self.schema, billed)
        except errors.UndefinedTable:  # the billing agent has not migrated its schema yet
            return False
        if any(stored[s] < tails[s] - 1 for s in billed):
            return False
        viewed = await self.view().positions(quota)
        return all(viewed[s] >= tails[s] - 1 for s in quota)

    async def audit(self, **options: Any) -> AuditResult:
        return await audit(
            self.log,
            self.topology,
            AuditOptions(**options),
            billing=(self.conn, self.schema),
            quota=self.view(),
        )


async def run_agents(
    env: Env, done: Callable[[], Any], *, timeout: float = 90, agents: Sequence[str] = AGENTS
) -> None:
    """Run the real agents in process (owning every partition) until ``await done()``."""
    app = env.app()
    stop = asyncio.Event()
    runner = AgentRunner(app, list(agents), StaticOwnership(), interval=0.05)
    task = asyncio.create_task(runner.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await done():
                assert not task.done(), task.exception()
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await app.close()


async def drop_schema(conn: AsyncConnection[Any], schema: str) -> None:
    await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def drop_prefix(redis: Redis, prefix: str) -> None:
    keys = [key async for key in redis.scan_iter(match=prefix + "*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.unlink(*keys[i : i + 500])


@pytest.fixture
async def env(unique: str, settings: Settings, rabbit_log: RabbitEventLog) -> AsyncIterator[Env]:
    topo = Topology(partitions=2, prefix=f"{unique}-")
    mine = settings.model_copy(
        update={
            "stream_prefix": topo.prefix,
            "partitions": topo.partitions,
            "redis_prefix": f"qfaudit:{unique}:",
            "billing_schema": f"audit_{unique.replace('-', '_')}",
        }
    )
    await App("setup", rabbit_log, topology=topo).create_streams()
    redis = Redis.from_url(settings.redis_url)
    conn = await AsyncConnection.connect(settings.postgres_dsn, autocommit=True)
    try:
        yield Env(mine, rabbit_log, topo, redis, conn)
    finally:
        for schema in (mine.billing_schema, mine.billing_schema + "_replay"):
            await drop_schema(conn, schema)
        await conn.close()
        await drop_prefix(redis, mine.redis_prefix)
        await redis.aclose()
        for topic in topo.all:
            for stream in topic.streams:
                await rabbit_log.delete_stream(stream)


async def run_world(env: Env, seed: int = 3, requests: int = 400) -> World:
    """Simulated traffic through the real agents: publish the inputs, let them decide and
    project, until both views have applied every decision."""
    world = simulate(env.topology, random.Random(seed), tenants=5, requests=requests)
    await env.publish(world.inputs())
    expected = sum(len(evs) for evs in world.decisions().values())

    async def done() -> bool:
        return await env.caught_up(expected)

    await run_agents(env, done)
    return world
