"""The appender coalesces concurrent appends into one submit per stream and loop turn."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from events import InferenceRequested, decode
from events.model import RequestSpec
from streams.ingress.appender import Appender
from streams.log import LogError, Position, read_until_tail
from streams.memory_log import MemoryEventLog
from streams.topics import Topology

TOPO = Topology(partitions=2)


def request(tenant: str) -> InferenceRequested:
    return InferenceRequested(
        tenant_id=tenant,
        request_id=uuid.uuid4(),
        spec=RequestSpec(model="echo", prompt="x", max_tokens=1),
        estimated_prompt_tokens=1,
    )


class CountingLog(MemoryEventLog):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.submits: list[tuple[str, int]] = []
        self.fail = fail

    async def submit(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> asyncio.Future[None]:
        self.submits.append((stream, len(payloads)))
        if self.fail:
            raise LogError("broker says no")
        return await super().submit(
            stream, payloads, publisher=publisher, publishing_ids=publishing_ids
        )


async def test_concurrent_appends_go_out_together_and_in_order() -> None:
    log = CountingLog()
    for s in TOPO.requests.streams:
        await log.create_stream(s)
    appender = Appender(log)
    events = [request(f"tenant-{i % 5}") for i in range(50)]
    await asyncio.gather(*(appender.append(TOPO.requests, e) for e in events))
    assert sum(n for _, n in log.submits) == 50
    assert len(log.submits) <= TOPO.partitions  # one batch per stream
    for stream in TOPO.requests.streams:
        stored: list[uuid.UUID] = []
        async for records in read_until_tail(log, stream, Position.first()):
            stored.extend(decode(r.data).event_id for r in records)
        expected = [e.event_id for e in events if TOPO.requests.stream_for(e.tenant_id) == stream]
        assert stored == expected
    await appender.close()


async def test_a_failed_submit_fails_every_caller_of_the_batch() -> None:
    log = CountingLog(fail=True)
    appender = Appender(log)
    results = await asyncio.gather(
        *(appender.append(TOPO.requests, request("a")) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, LogError) for r in results)
    with pytest.raises(LogError):
        await appender.append(TOPO.requests, request("a"))
