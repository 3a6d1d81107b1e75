"""Clock ticks advance event time on an idle partition, so reservations expire."""

from __future__ import annotations

import hashlib
import uuid

from events import (
    InferenceRequested,
    QuotaPolicy,
    ReservationExpired,
    TenantRegistered,
    TokensReserved,
)
from events.model import RequestSpec
from streams.agents.quota import register_quota
from streams.memory_log import MemoryEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.runtime.helpers import read_all, run_until


async def test_an_unsettled_reservation_expires_on_an_idle_partition() -> None:
    app = App("test", MemoryEventLog(), topology=Topology(partitions=1))
    await app.create_streams()
    register_quota(app, tick_s=0.1)
    requests = app.topic(app.topology.requests)
    await requests.send(
        TenantRegistered(
            tenant_id="acme",
            name="Acme",
            api_key_hash=hashlib.sha256(b"k").hexdigest(),
            policy=QuotaPolicy(token_budget=1000, reservation_ttl_s=1),
        )
    )
    await requests.send(
        InferenceRequested(
            tenant_id="acme",
            request_id=uuid.uuid4(),
            spec=RequestSpec(model="echo", prompt="hi", max_tokens=10),
            estimated_prompt_tokens=5,
        )
    )
    quota = app.topology.quota.streams
    found: list[object] = []

    def expired() -> bool:
        log = app.log
        assert isinstance(log, MemoryEventLog)
        return len(log._streams[quota[0]]) >= 2

    await run_until(app, ["quota"], expired, timeout=10)
    found = list(await read_all(app.log, quota))
    assert [type(e) for e in found] == [TokensReserved, ReservationExpired]
