"""Shared fixtures: settings for the real local servers, unique names per test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from quotaflow.settings import Settings
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.tansu_broker import kafka_log, tansu
from tests.triton_server import triton_server

# one tritonserver and one tansu (Kafka) broker per session, shared by every test package
__all__ = ["kafka_log", "tansu", "triton_server"]

RUN_ID = uuid.uuid4().hex[:8]

# Clock ticks (ClockTicked every 10 s per partition) carry today's time; tests replay events
# stamped in the past and compare decisions with a pure replay of what they published, so
# ticks are off unless a test turns them on (tests/agents/test_quota_clock.py does).
os.environ.setdefault("QUOTAFLOW_QUOTA_TICK_S", "0")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture
def unique() -> str:
    """A name no other test (or earlier run) uses."""
    return f"t{RUN_ID}-{uuid.uuid4().hex[:8]}"


async def drop_topology(log: RabbitEventLog, topo: Topology) -> None:
    for topic in topo.all:
        for stream in topic.streams:
            await log.delete_stream(stream)


@pytest.fixture
async def topology(unique: str, rabbit_log: RabbitEventLog) -> AsyncIterator[Topology]:
    """Every stream of a two-partition topology under a prefix no other test uses."""
    topo = Topology(partitions=2, prefix=f"{unique}-")
    await App("setup", rabbit_log, topology=topo).create_streams()
    yield topo
    await drop_topology(rabbit_log, topo)


@pytest.fixture
async def rabbit_log(settings: Settings) -> AsyncIterator[RabbitEventLog]:
    log = RabbitEventLog(settings.stream_endpoint, name="quotaflow-test", connect_timeout=90)
    yield log
    await log.close()


def pytest_report_header() -> str:
    url = os.environ.get("QUOTAFLOW_RABBITMQ_URL", "default")
    return f"quotaflow test run {RUN_ID}; QUOTAFLOW_RABBITMQ_URL={url}"
