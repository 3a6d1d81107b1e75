"""The contract every EventLog backend passes (subclassed once per backend)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from streams.log import EventLog, OffsetStore, Position, Record, StreamNotFound, read_until_tail


async def collect(log: EventLog, stream: str, start: Position) -> list[Record]:
    out: list[Record] = []
    async for batch in read_until_tail(log, stream, start):
        out.extend(batch)
    return out


async def take(sub: AsyncIterator[list[Record]], count: int, timeout: float = 10) -> list[Record]:
    out: list[Record] = []

    async def run() -> None:
        async for batch in sub:
            out.extend(batch)
            if len(out) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return out


class EventLogContract:
    """Subclasses provide the ``log`` fixture (an EventLog that is also an OffsetStore)."""

    @pytest.fixture
    async def stream(self, log: EventLog, unique: str) -> str:
        await log.create_stream(unique)
        return unique

    async def test_append_and_read_back_in_order(self, log: EventLog, stream: str) -> None:
        payloads = [f"event-{i}".encode() for i in range(250)]
        await log.append(stream, payloads[:100])
        await log.append(stream, payloads[100:])
        records = await collect(log, stream, Position.first())
        assert [r.data for r in records] == payloads
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets)
        assert len(set(offsets)) == 250
        assert all(r.stream == stream for r in records)

    async def test_create_stream_is_idempotent(self, log: EventLog, stream: str) -> None:
        await log.append(stream, [b"kept"])
        await log.create_stream(stream)
        assert [r.data for r in await collect(log, stream, Position.first())] == [b"kept"]

    async def test_resent_batch_from_named_publisher_is_stored_once(
        self, log: EventLog, stream: str
    ) -> None:
        batch = [b"a", b"b", b"c"]
        await log.append(stream, batch, publisher="agent-x", publishing_ids=[10, 11, 12])
        await log.append(stream, batch, publisher="agent-x", publishing_ids=[10, 11, 12])
        await log.append(stream, [b"c", b"d"], publisher="agent-x", publishing_ids=[12, 13])
        assert [r.data for r in await collect(log, stream, Position.first())] == [
            b"a",
            b"b",
            b"c",
            b"d",
        ]
        assert await log.last_sequence(stream, "agent-x") == 13
        assert await log.last_sequence(stream, "nobody") == 0

    async def test_publishers_deduplicate_independently(self, log: EventLog, stream: str) -> None:
        await log.append(stream, [b"p1"], publisher="one", publishing_ids=[5])
        await log.append(stream, [b"p2"], publisher="two", publishing_ids=[5])
        assert len(await collect(log, stream, Position.first())) == 2

    async def test_read_from_offset_next_and_last(self, log: EventLog, stream: str) -> None:
        await log.append(stream, [str(i).encode() for i in range(20)])
        everything = await collect(log, stream, Position.first())
        from_7 = await collect(log, stream, Position.offset(everything[7].offset))
        assert [r.data for r in from_7] == [str(i).encode() for i in range(7, 20)]

        last = log.subscribe(stream, Position.last())
        got_last = await take(last.__aiter__(), 1)
        await last.close()
        assert got_last[-1].data == b"19"

        sub = log.subscribe(stream, Position.next())
        reader = asyncio.create_task(take(sub.__aiter__(), 1))
        await asyncio.sleep(0.5)  # the subscription is established once iteration starts
        await log.append(stream, [b"new"])
        got = await reader
        await sub.close()
        assert [r.data for r in got] == [b"new"]

    async def test_read_from_timestamp(self, log: EventLog, stream: str) -> None:
        await log.append(stream, [b"old"])
        await asyncio.sleep(1.2)
        cut = int(time.time() * 1000)
        await asyncio.sleep(0.05)
        await log.append(stream, [b"new-1", b"new-2"])
        records = await collect(log, stream, Position.timestamp(cut))
        assert [r.data for r in records] == [b"new-1", b"new-2"]
        assert all(r.timestamp_ms >= cut - 1000 for r in records)

    async def test_tail_counts_past_the_last_record(self, log: EventLog, stream: str) -> None:
        assert await log.tail(stream) == 0
        await log.append(stream, [b"x"] * 5)
        records = await collect(log, stream, Position.first())
        assert await log.tail(stream) == records[-1].offset + 1

    async def test_subscription_follows_appends(self, log: EventLog, stream: str) -> None:
        sub = log.subscribe(stream, Position.first(), batch=10)
        it = sub.__aiter__()

        async def produce() -> None:
            for i in range(5):
                await log.append(stream, [f"{i}-{j}".encode() for j in range(7)])
                await asyncio.sleep(0.05)

        producer = asyncio.create_task(produce())
        got = await take(it, 35)
        await producer
        await sub.close()
        assert len(got) == 35
        assert all(len(r.data) > 0 for r in got)
        assert [r.offset for r in got] == sorted(r.offset for r in got)

    async def test_offsets_are_stored_and_loaded(self, log: OffsetStore, stream: str) -> None:
        assert await log.load("consumer-a", stream) is None
        await log.store("consumer-a", stream, 41)
        for _ in range(50):  # a stored offset is written asynchronously by RabbitMQ
            if await log.load("consumer-a", stream) == 41:
                break
            await asyncio.sleep(0.05)
        assert await log.load("consumer-a", stream) == 41
        assert await log.load("consumer-b", stream) is None

    async def test_missing_stream_is_an_error(self, log: EventLog, unique: str) -> None:
        with pytest.raises(StreamNotFound):
            await log.append(unique + "-missing", [b"x"])
