from __future__ import annotations

import pytest

from streams.memory_log import MemoryEventLog
from tests.streams.contract import EventLogContract


class TestMemoryEventLog(EventLogContract):
    @pytest.fixture
    def log(self) -> MemoryEventLog:
        return MemoryEventLog()
