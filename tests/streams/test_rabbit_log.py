from __future__ import annotations

import pytest

from streams.rabbit_log import RabbitEventLog
from tests.streams.contract import EventLogContract

pytestmark = pytest.mark.services


class TestRabbitEventLog(EventLogContract):
    @pytest.fixture
    async def log(self, rabbit_log: RabbitEventLog) -> RabbitEventLog:
        return rabbit_log

    @pytest.fixture(autouse=True)
    async def _drop_streams(self, rabbit_log: RabbitEventLog, unique: str) -> object:
        yield None
        await rabbit_log.delete_stream(unique)
