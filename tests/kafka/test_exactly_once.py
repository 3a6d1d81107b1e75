"""Agents on Kafka (``QUOTAFLOW_LOG=kafka``), killed with SIGKILL at random moments: every
output is stored exactly once, through publisher headers and the log's own deduplication
(no idempotent producer, which the test broker does not have anyway)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from events import encode
from quotaflow.tansu import TansuBroker
from streams.kafka_log import KafkaEventLog
from streams.topics import Topology
from tests.kafka.conftest import kafka_env
from tests.runtime.helpers import read_all, requests
from tests.runtime.processes import kill, spawn_agent, terminate

pytestmark = pytest.mark.slow

TOTAL = 100_000


async def publish(log: KafkaEventLog, topo: Topology) -> list[str]:
    events = requests(TOTAL, tenants=50)
    by_stream: dict[str, list[bytes]] = {}
    for e in events:
        by_stream.setdefault(topo.requests.stream_for(e.tenant_id), []).append(encode(e))
    for stream, payloads in by_stream.items():
        for i in range(0, len(payloads), 5000):
            await log.append(stream, payloads[i : i + 5000])
    return [str(e.event_id) for e in events]


async def output_count(log: KafkaEventLog, topo: Topology) -> int:
    return sum([await log.tail(s) for s in topo.quota.streams])


async def test_sigkilled_agents_on_kafka_lose_and_duplicate_nothing(
    kafka_log: KafkaEventLog, kafka_topology: Topology, tansu: TansuBroker, tmp_path: Path
) -> None:
    topo = kafka_topology
    expected = await publish(kafka_log, topo)
    env = kafka_env(tansu, topo)
    rng = random.Random(5)
    log_file = tmp_path / "agent.log"
    kills = 0
    for _ in range(8):
        proc = spawn_agent("passthrough", env, log=log_file)
        before = await output_count(kafka_log, topo)
        deadline = time.monotonic() + 30
        while await output_count(kafka_log, topo) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.05, 0.3))
        kill(proc)
        if 0 < await output_count(kafka_log, topo) < TOTAL:
            kills += 1
        if kills >= 3:
            break
    assert kills >= 3, log_file.read_text()[-3000:]

    proc = spawn_agent("passthrough", env, log=log_file)
    try:
        deadline = time.monotonic() + 120
        while await output_count(kafka_log, topo) < TOTAL:
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # anything extra would show up now
    finally:
        assert terminate(proc) == 0, log_file.read_text()[-3000:]
    out = await read_all(kafka_log, topo.quota.streams)
    counts = Counter(str(e.event_id) for e in out)
    assert len(out) == TOTAL, f"{len(out) - TOTAL} extra outputs"
    assert set(counts) == set(expected)
    assert max(counts.values()) == 1
