"""The quota agent and the Redis quota view against the real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from events import (
    AnyEvent,
    Event,
    InferenceCompleted,
    InferenceRequested,
    QuotaPolicy,
    RequestRejected,
    TenantRegistered,
    TokensReserved,
    encode,
)
from events.model import RequestSpec
from projections.quota_view import QuotaView
from quotaflow.settings import Settings
from quotaflow.wiring import build_app
from streams.quota import replay, tenant_quota
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.runtime.helpers import read_all, run_until
from tests.runtime.processes import kill, spawn_agent, terminate

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def registered(tenant: str, policy: QuotaPolicy) -> TenantRegistered:
    key_hash = hashlib.sha256(tenant.encode()).hexdigest()
    return TenantRegistered(
        tenant_id=tenant, name=tenant, api_key_hash=key_hash, policy=policy, occurred_at=T0
    )


def request(tenant: str, i: int, max_tokens: int = 90, at: datetime = T0) -> InferenceRequested:
    return InferenceRequested(
        tenant_id=tenant,
        request_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{i}"),
        spec=RequestSpec(model="echo", prompt=f"q{i}", max_tokens=max_tokens),
        estimated_prompt_tokens=10,
        occurred_at=at,
    )


@pytest.fixture
async def redis_prefix(unique: str, settings: Settings) -> AsyncIterator[str]:
    prefix = f"{unique}:"
    yield prefix
    client = Redis.from_url(settings.redis_url)
    await QuotaView(client, prefix).clear()
    await client.delete(prefix + "pos")
    await client.aclose()


def app_for(settings: Settings, topo: Topology, redis_prefix: str) -> App:
    return build_app(
        settings.model_copy(
            update={
                "stream_prefix": topo.prefix,
                "partitions": topo.partitions,
                "redis_prefix": redis_prefix,
                "quota_tick_s": 0,  # the decisions must be those of the published events alone
            }
        )
    )


async def decisions(log: RabbitEventLog, topo: Topology) -> list[AnyEvent]:
    return await read_all(log, topo.quota.streams)


async def test_a_burst_of_2000_concurrent_requests_admits_exactly_k(
    rabbit_log: RabbitEventLog, topology: Topology, redis_prefix: str, settings: Settings
) -> None:
    k, each = 137, 100  # every request reserves 10 prompt + 90 completion tokens
    policy = QuotaPolicy(token_budget=k * each)
    app = app_for(settings, topology, redis_prefix)
    requests_topic = app.topic(topology.requests)
    await requests_topic.send(registered("burst", policy))
    burst = [request("burst", i) for i in range(2000)]
    # 2000 clients at once: 2000 concurrent appends to the tenant's partition
    await asyncio.gather(*(requests_topic.send(r) for r in burst))

    async def decided() -> int:
        return len(await decisions(rabbit_log, topology))

    counts: list[int] = [0]

    def done() -> bool:
        return counts[0] >= 2000

    async def watch() -> None:
        while counts[0] < 2000:
            counts[0] = await decided()
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    await run_until(app, ["quota", "quota-view"], done, timeout=60)
    await watcher
    out = await decisions(rabbit_log, topology)
    kinds = Counter(type(e).__name__ for e in out)
    assert kinds == {"TokensReserved": k, "RequestRejected": 2000 - k}
    assert {e.reason for e in out if isinstance(e, RequestRejected)} == {"budget"}
    assert sum(e.tokens for e in out if isinstance(e, TokensReserved)) == k * each

    # the Redis view says the same, and it is what the pure fold says
    await run_until(app, ["quota-view"], None, timeout=1.5)
    client = Redis.from_url(settings.redis_url)
    try:
        view = await QuotaView(client, redis_prefix).tenant("burst")
    finally:
        await client.aclose()
    assert view is not None
    assert (view.budget, view.reserved, view.used, view.remaining) == (k * each, k * each, 0, 0)
    state, _ = replay([registered("burst", policy), *burst])
    assert view == tenant_quota(state, "burst")
    await app.close()


def workload(rng: random.Random, tenants: int, requests: int) -> list[Event]:
    """Tenants with tight budgets and rate limits; requests, some completed."""
    events: list[Event] = []
    for t in range(tenants):
        policy = QuotaPolicy(
            token_budget=rng.choice([5_000, 50_000, 10**9]),
            tokens_per_minute=rng.choice([None, 2_000, 20_000]),
            requests_per_minute=rng.choice([None, 50, 500]),
            max_concurrent=rng.choice([None, 5, 50]),
            reservation_ttl_s=30,
        )
        events.append(registered(f"tenant-{t}", policy))
    at = T0
    for i in range(requests):
        at += timedelta(milliseconds=rng.randint(0, 200))
        req = request(f"tenant-{rng.randrange(tenants)}", i, rng.randint(1, 200), at)
        events.append(req)
        if rng.random() < 0.7:  # a completion for it arrives later (it may have been rejected)
            events.append(
                InferenceCompleted(
                    tenant_id=req.tenant_id,
                    request_id=req.request_id,
                    model="echo",
                    prompt_tokens=10,
                    completion_tokens=rng.randint(0, req.spec.max_tokens),
                    latency_ms=1.0,
                    occurred_at=at + timedelta(milliseconds=rng.randint(1, 3000)),
                )
            )
    events.sort(key=lambda e: e.occurred_at)
    return events


@pytest.mark.slow
async def test_killing_the_quota_agent_and_the_view_loses_and_repeats_nothing(
    rabbit_log: RabbitEventLog,
    topology: Topology,
    redis_prefix: str,
    settings: Settings,
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    events = workload(rng, tenants=12, requests=20_000)
    by_stream: dict[str, list[Event]] = {}
    for e in events:
        by_stream.setdefault(topology.requests.stream_for(e.tenant_id), []).append(e)
    for stream, evs in by_stream.items():
        payloads = [encode(e) for e in evs]
        for i in range(0, len(payloads), 2000):
            await rabbit_log.append(stream, payloads[i : i + 2000])
    # what the agent must decide: the pure replay of each partition
    expected: list[Event] = []
    for evs in by_stream.values():
        expected.extend(replay(evs)[1])

    env = {
        "QUOTAFLOW_STREAM_PREFIX": topology.prefix,
        "QUOTAFLOW_PARTITIONS": str(topology.partitions),
        "QUOTAFLOW_REDIS_PREFIX": redis_prefix,
        "QUOTAFLOW_QUOTA_TICK_S": "0",  # decisions must follow from the published events alone
    }
    agents = ["quota", "quota-view"]
    factory = "quotaflow.wiring:build_app"
    log_file = tmp_path / "quota.log"

    async def decided() -> int:
        return sum([await rabbit_log.tail(s) for s in topology.quota.streams])

    kills = 0
    for _ in range(8):
        proc = spawn_agent(agents, env, log=log_file, factory=factory)
        before = await decided()
        deadline = time.monotonic() + 60
        while await decided() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        kill(proc)
        if 0 < await decided() < len(expected):
            kills += 1
        if kills >= 3:
            break
    assert kills >= 3, log_file.read_text()[-3000:]

    proc = spawn_agent(agents, env, log=log_file, factory=factory)
    client = Redis.from_url(settings.redis_url)
    view = QuotaView(client, redis_prefix)
    try:
        deadline = time.monotonic() + 120
        streams = [*topology.requests.streams, *topology.quota.streams]
        while True:
            positions = await view.positions(streams)
            tails = [await rabbit_log.tail(s) for s in topology.quota.streams]
            caught_up = all(
                positions[s] >= tail - 1
                for s, tail in zip(topology.quota.streams, tails, strict=True)
            )
            if await decided() >= len(expected) and caught_up:
                break
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)
        out = await decisions(rabbit_log, topology)
        assert Counter(e.event_id for e in out) == Counter(e.event_id for e in expected)
        assert sorted(out, key=lambda e: str(e.event_id)) == sorted(
            expected, key=lambda e: str(e.event_id)
        )
        # the view equals one rebuilt from the log in one go
        fresh = QuotaView(client, redis_prefix + "fresh:")
        for stream in streams:
            items = []
            async for records in _records(rabbit_log, stream):
                items.extend(records)
            await fresh.apply(
                stream, [(o, e) for o, e in items if type(e).__name__ != "InferenceRequested"]
            )
        live, rebuilt = await view.snapshot(), await fresh.snapshot()
        assert live["tenants"] == rebuilt["tenants"]
        await fresh.clear()
        await client.delete(redis_prefix + "fresh:pos")
    finally:
        assert terminate(proc) == 0
        await client.aclose()


async def _records(log: RabbitEventLog, stream: str) -> AsyncIterator[list[tuple[int, AnyEvent]]]:
    from events import decode
    from streams.log import Position, read_until_tail

    async for records in read_until_tail(log, stream, Position.first()):
        yield [(r.offset, decode(r.data)) for r in records]
