"""A subscription of the Kafka backend: one consumer, outside any consumer group, assigned
the stream's single partition and positioned by us (see :mod:`streams.kafka_log`).

aiokafka's consumer reconnects by itself and fetches ahead into a bounded buffer; records
come out in offset order, ``batch`` at most at a time. ``close`` ends the iteration at once,
also while it waits for records.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka_client import kafka_errors
from streams.log import Position, Record

if TYPE_CHECKING:
    from streams.kafka_log import KafkaEventLog

_POLL_MS = 1000


class KafkaSubscription:
    def __init__(self, log: KafkaEventLog, stream: str, start: Position, batch: int) -> None:
        self._log = log
        self._stream = stream
        self._start = start
        self._batch = batch
        self._closed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._polling = False
        self._finished = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[list[Record]]:
        if self._closed.is_set():
            return
        await self._log.require(self._stream)
        consumer = self._consumer = self._log.consumer("sub")
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            with kafka_errors(f"subscribing to {self._stream}"):
                await consumer.start()
                tp = TopicPartition(self._stream, 0)
                consumer.assign([tp])
                minimum, since = await self._seek(consumer, tp)
            while not self._closed.is_set():
                fetch = asyncio.ensure_future(
                    consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=self._batch)
                )
                self._polling = True
                try:
                    await asyncio.wait({fetch, closing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._polling = False
                    if not fetch.done():
                        fetch.cancel()
                    with contextlib.suppress(BaseException):
                        await fetch
                if self._closed.is_set():
                    return
                with kafka_errors(f"reading {self._stream}"):
                    found = fetch.result().get(tp, [])
                records = [
                    Record(self._stream, r.offset, r.timestamp, r.value or b"")
                    for r in found
                    if r.offset >= minimum
                ]
                if since is not None:  # a time start: nothing from before it
                    records = [r for r in records if r.timestamp_ms >= since]
                    if records:
                        since = None
                if records:
                    minimum = records[-1].offset + 1
                    yield records
        finally:
            closing.cancel()
            await self._stop()
            self._finished.set()

    async def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[int, int | None]:
        """Position the consumer; the lowest offset and timestamp to hand out."""
        begin, end = await self._log.bounds(tp.topic)
        kind, value = self._start.kind, self._start.value
        since: int | None = None
        match kind:
            case "first":
                at = begin
            case "next":
                at = end
            case "last":
                at = max(end - 1, begin)
            case "offset":
                at = min(max(value, begin), end)
            case "timestamp":
                found = (await consumer.offsets_for_times({tp: value}))[tp]
                # no record at or after the time: from the end (some brokers answer offset 0
                # with timestamp -1 instead of nothing)
                at = end if found is None or found.timestamp < value else found.offset
                since = value
            case _:
                raise AssertionError(kind)
        consumer.seek(tp, at)
        return (value if kind == "offset" else at), since

    async def _stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def close(self) -> None:
        self._closed.set()
        self._log.forget(self)
        if self._polling:  # the iteration wakes up, stops the consumer and ends
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), 10)
        await self._stop()
