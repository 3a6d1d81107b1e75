"""SIGKILL the inference agent mid-stream and restart it: one result per request, ever."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc.aio as grpcaio

from events import InferenceCompleted
from quotaflow.triton.server import TritonHandle
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.inference.helpers import per_request, publish, reservation, result_count, results
from tests.runtime.processes import kill, spawn_agent, terminate

pytestmark = [pytest.mark.services, pytest.mark.triton, pytest.mark.slow]

TOTAL = 4000
FACTORY = "tests.inference.crash_app:build"


async def wait_for_results(log: RabbitEventLog, topo: Topology, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (done := await result_count(log, topo)) < count:
        assert time.monotonic() < deadline, f"only {done} of {count} results"
        await asyncio.sleep(0.2)


async def test_sigkill_mid_stream_gives_exactly_one_completion_per_request(
    rabbit_log: RabbitEventLog, topology: Topology, triton_server: TritonHandle, tmp_path: Path
) -> None:
    runs_before = await echo_runs(triton_server)
    reservations = [reservation(i, tenants=50, max_tokens=16) for i in range(TOTAL)]
    await publish(App("setup", rabbit_log, topology=topology), reservations)
    env = {
        "QUOTAFLOW_STREAM_PREFIX": topology.prefix,
        "QUOTAFLOW_PARTITIONS": str(topology.partitions),
        "QUOTAFLOW_TRITON_URL": triton_server.grpc_url,
    }
    log_file = tmp_path / "agent.log"
    rng = random.Random(11)
    kills_mid_stream = 0
    for _ in range(6):
        proc = spawn_agent("inference", env, log=log_file, factory=FACTORY)
        before = await result_count(rabbit_log, topology)
        deadline = time.monotonic() + 30
        while await result_count(rabbit_log, topology) == before:
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        kill(proc)
        if 0 < await result_count(rabbit_log, topology) < TOTAL:
            kills_mid_stream += 1
        if kills_mid_stream >= 3:
            break
    assert kills_mid_stream >= 3, log_file.read_text()[-3000:]

    proc = spawn_agent("inference", env, log=log_file, factory=FACTORY)
    try:
        await wait_for_results(rabbit_log, topology, TOTAL, timeout=90)
        await asyncio.sleep(2)  # anything extra would show up now
    finally:
        assert terminate(proc) == 0
    found = await results(rabbit_log, topology)
    assert len(found) == TOTAL, f"{len(found) - TOTAL} extra results"
    counts = per_request(found)
    assert set(counts) == {r.request_id for r in reservations}
    assert max(counts.values()) == 1
    assert all(isinstance(e, InferenceCompleted) for e in found)
    # the model ran again for what was done but not committed when killed; one result each
    assert await echo_runs(triton_server) - runs_before > TOTAL


async def echo_runs(triton: TritonHandle) -> int:
    """Requests the echo model has answered since the server started."""
    async with grpcaio.InferenceServerClient(triton.grpc_url) as client:
        stats: Any = await client.get_inference_statistics("echo", as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))
