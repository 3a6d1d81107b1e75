"""Fixtures of the Kafka tests: a topology of their own on the session's tansu broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from quotaflow.tansu import TansuBroker
from streams.kafka_log import KafkaEventLog
from streams.runtime.app import App
from streams.topics import Topology


@pytest.fixture
async def kafka_topology(unique: str, kafka_log: KafkaEventLog) -> AsyncIterator[Topology]:
    """Every stream (Kafka topic) of a two-partition topology under a prefix of its own."""
    topo = Topology(partitions=2, prefix=f"{unique}-")
    await App("setup", kafka_log, topology=topo).create_streams()
    yield topo
    for topic in topo.all:
        for stream in topic.streams:
            await kafka_log.delete_stream(stream)


def kafka_env(tansu: TansuBroker, topo: Topology) -> dict[str, str]:
    """The environment of a quotaflow process that runs on this broker and topology."""
    return {
        "QUOTAFLOW_LOG": "kafka",
        "QUOTAFLOW_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap_servers,
        "QUOTAFLOW_STREAM_PREFIX": topo.prefix,
        "QUOTAFLOW_PARTITIONS": str(topo.partitions),
    }
