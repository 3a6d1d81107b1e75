"""Exactly-once and failover against the real broker, with real SIGKILLs."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from events import encode
from quotaflow.settings import Settings
from streams.log import Position, read_until_tail
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.runtime.ownership import lock_key
from streams.topics import Topology
from tests.conftest import drop_topology
from tests.runtime.helpers import read_all, requests
from tests.runtime.processes import kill, spawn_agent, terminate

pytestmark = [pytest.mark.services, pytest.mark.slow]


async def publish_requests(
    log: RabbitEventLog, topo: Topology, count: int, start: int = 0
) -> list[str]:
    events = requests(count, tenants=50, start=start)
    by_stream: dict[str, list[bytes]] = {}
    for e in events:
        by_stream.setdefault(topo.requests.stream_for(e.tenant_id), []).append(encode(e))
    for stream, payloads in by_stream.items():
        for i in range(0, len(payloads), 5000):
            await log.append(stream, payloads[i : i + 5000])
    return [str(e.event_id) for e in events]


async def output_count(log: RabbitEventLog, topo: Topology) -> int:
    # nothing but the agent writes to the output streams, so offsets are dense there
    return sum([await log.tail(s) for s in topo.quota.streams])


async def wait_for_outputs(log: RabbitEventLog, topo: Topology, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await output_count(log, topo) < count:
        assert time.monotonic() < deadline, f"only {await output_count(log, topo)} of {count}"
        await asyncio.sleep(0.5)


def env_for(topo: Topology) -> dict[str, str]:
    return {"QUOTAFLOW_STREAM_PREFIX": topo.prefix, "QUOTAFLOW_PARTITIONS": str(topo.partitions)}


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    rabbit_log: RabbitEventLog, topology: Topology, tmp_path: Path
) -> None:
    total = 100_000
    expected = await publish_requests(rabbit_log, topology, total)
    rng = random.Random(7)
    kills_mid_stream = 0
    log_file = tmp_path / "agent.log"
    for _ in range(6):
        proc = spawn_agent("passthrough", env_for(topology), log=log_file)
        # let it start and make progress, then kill it somewhere in the middle
        before = await output_count(rabbit_log, topology)
        deadline = time.monotonic() + 30
        while await output_count(rabbit_log, topology) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(rng.uniform(0.05, 0.8))
        kill(proc)
        done = await output_count(rabbit_log, topology)
        if 0 < done < total:
            kills_mid_stream += 1
        if kills_mid_stream >= 3:
            break
    assert kills_mid_stream >= 3, log_file.read_text()[-3000:]

    proc = spawn_agent("passthrough", env_for(topology), log=log_file)
    try:
        await wait_for_outputs(rabbit_log, topology, total, timeout=180)
        await asyncio.sleep(2)  # anything extra would show up now
    finally:
        assert terminate(proc) == 0
    out = await read_all(rabbit_log, topology.quota.streams)
    counts = Counter(str(e.event_id) for e in out)
    assert len(out) == total, f"{len(out) - total} extra outputs"
    assert set(counts) == set(expected)
    assert max(counts.values()) == 1


def lock_holders(settings: Settings, namespace: str) -> Counter[int]:
    """Backend pid → partitions of the passthrough agent it holds."""
    key = lock_key(f"{namespace}:passthrough")
    with psycopg.connect(settings.postgres_dsn) as conn:
        rows = conn.execute(
            "select pid from pg_locks where locktype = 'advisory' and granted"
            " and classid = %s::bigint::oid and objsubid = 2",
            (key,),
        ).fetchall()
    return Counter(row[0] for row in rows)


async def wait_until(check: object, timeout: float) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "condition not reached in time"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def test_a_killed_replica_s_partitions_are_taken_over(
    rabbit_log: RabbitEventLog, unique: str, settings: Settings, tmp_path: Path
) -> None:
    topo = Topology(partitions=4, prefix=f"{unique}-")
    await App("setup", rabbit_log, topology=topo).create_streams()
    env = env_for(topo)
    namespace = topo.prefix
    first = await publish_requests(rabbit_log, topo, 4000)
    a = spawn_agent("passthrough", env, ownership="pg", log=tmp_path / "a.log")
    b = spawn_agent("passthrough", env, ownership="pg", log=tmp_path / "b.log")
    try:
        # two replicas share four partitions: two each, never one partition twice
        await wait_until(lambda: sorted(lock_holders(settings, namespace).values()) == [2, 2], 30)
        await wait_for_outputs(rabbit_log, topo, 4000, timeout=60)
        kill(a)
        killed_at = time.monotonic()
        await wait_until(lambda: list(lock_holders(settings, namespace).values()) == [4], 10)
        took_over_in = time.monotonic() - killed_at
        assert took_over_in <= 10
        second = await publish_requests(rabbit_log, topo, 4000, start=4000)
        await wait_for_outputs(rabbit_log, topo, 8000, timeout=60)
        await asyncio.sleep(1)
        out = Counter(str(e.event_id) for e in await read_all(rabbit_log, topo.quota.streams))
        assert set(out) == set(first) | set(second)
        assert max(out.values()) == 1
    finally:
        kill(a)
        assert terminate(b) == 0
        await drop_topology(rabbit_log, topo)


async def test_a_poison_record_is_dead_lettered_and_the_agent_keeps_going(
    rabbit_log: RabbitEventLog, topology: Topology
) -> None:
    from streams.agents.passthrough import register_passthrough
    from streams.runtime.deadletter import DeadLetter
    from tests.runtime.helpers import run_until

    app = App("poison", rabbit_log, topology=topology)
    register_passthrough(app, app.topic(topology.requests), app.topic(topology.quota))
    stream = topology.requests.stream(0)
    good = [
        e for e in requests(40, tenants=50) if topology.requests.stream_for(e.tenant_id) == stream
    ]
    await rabbit_log.append(stream, [encode(e) for e in good[:3]])
    await rabbit_log.append(stream, [b"\xff\x00 not an event"])
    await rabbit_log.append(stream, [encode(e) for e in good[3:]])
    seen: list[int] = [0]

    async def progress() -> None:
        while seen[0] < len(good):
            seen[0] = await output_count(rabbit_log, topology)
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(progress())
    await run_until(app, ["passthrough"], lambda: seen[0] >= len(good), timeout=60)
    await watcher
    out = await read_all(rabbit_log, topology.quota.streams)
    assert [e.event_id for e in out] == [e.event_id for e in good]
    letters: list[DeadLetter] = []
    async for batch in read_until_tail(rabbit_log, topology.deadletter.stream(0), Position.first()):
        letters.extend(DeadLetter.decode(r.data) for r in batch)
    assert len(letters) == 1
    assert (letters[0].agent, letters[0].stream, letters[0].kind) == (
        "passthrough",
        stream,
        "decode",
    )
    assert letters[0].offset == 3
    assert letters[0].data == b"\xff\x00 not an event"
    assert "not JSON" in letters[0].error
