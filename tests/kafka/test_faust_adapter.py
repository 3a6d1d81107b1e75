"""quotaflow's pass-through agent on a faust-streaming worker (a subprocess: faust owns its
event loop), against the session's tansu broker, through :mod:`streams.faust_adapter`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
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
from tests.runtime.processes import ROOT

pytestmark = pytest.mark.slow


def faust_worker(env: dict[str, str], group: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.kafka.faust_app", "worker", "--without-web"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*command, "-l", "info"],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT), "FAUST_APP_ID": group},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def tail_of(path: Path) -> str:
    return path.read_text()[-3000:]


async def publish(log: KafkaEventLog, topo: Topology, count: int, start: int) -> list[str]:
    events = requests(count, tenants=20, start=start)
    for e in events:
        await log.append(topo.requests.stream_for(e.tenant_id), [encode(e)])
    return [str(e.event_id) for e in events]


async def wait_for_outputs(
    log: KafkaEventLog, topo: Topology, count: int, worker_log: Path, timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while sum([await log.tail(s) for s in topo.quota.streams]) < count:
        assert time.monotonic() < deadline, tail_of(worker_log)
        await asyncio.sleep(0.2)


async def test_a_quotaflow_agent_runs_on_faust_and_a_redelivery_stores_nothing_twice(
    kafka_log: KafkaEventLog, kafka_topology: Topology, tansu: TansuBroker, tmp_path: Path
) -> None:
    topo = kafka_topology
    env = kafka_env(tansu, topo)
    worker_log = tmp_path / "faust.log"
    first = await publish(kafka_log, topo, 300, start=0)
    worker = faust_worker(env, f"{topo.prefix}faust", worker_log)
    try:
        await wait_for_outputs(kafka_log, topo, 300, worker_log)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)

    # as if the worker had crashed before faust committed anything: a consumer group
    # without commits, so faust delivers every input again and the agent emits every
    # output again; the log stores none of them twice
    second = await publish(kafka_log, topo, 200, start=300)
    group = f"{topo.prefix}faust-again"
    worker = faust_worker(env, group, worker_log)
    try:
        await wait_for_outputs(kafka_log, topo, 500, worker_log)
        for stream in topo.requests.streams:  # until faust has committed every input
            deadline = time.monotonic() + 30
            while await kafka_log.load(group, stream) != await kafka_log.tail(stream) - 1:
                assert time.monotonic() < deadline, tail_of(worker_log)
                await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # anything extra would show up now
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, tail_of(worker_log)

    out = await read_all(kafka_log, topo.quota.streams)
    counts = Counter(str(e.event_id) for e in out)
    assert len(out) == 500, f"{len(out) - 500} extra outputs"
    assert set(counts) == set(first) | set(second)
    # the pass-through agent kept each event's partition (tenant routing) on the way
    for stream, source in zip(topo.quota.streams, topo.requests.streams, strict=True):
        moved = await read_all(kafka_log, [stream])
        assert [str(e.event_id) for e in moved] == [
            str(e.event_id) for e in await read_all(kafka_log, [source])
        ]
    assert "Traceback" not in tail_of(worker_log)
