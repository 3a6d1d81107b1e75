"""Fixtures of the inference tests: a fresh topology on the real RabbitMQ (the session's
tritonserver comes from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology


@pytest.fixture
async def topology(unique: str, rabbit_log: RabbitEventLog) -> AsyncIterator[Topology]:
    topo = Topology(partitions=2, prefix=f"{unique}-")
    await App("setup", rabbit_log, topology=topo).create_streams()
    yield topo
    for topic in topo.all:
        for stream in topic.streams:
            await rabbit_log.delete_stream(stream)
