"""An in-memory event log with the semantics of the RabbitMQ backend. For unit tests."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from functools import partial

from streams.log import Position, PublishRejected, Record, StreamNotFound


class MemoryEventLog:
    def __init__(self, max_record_bytes: int = 1024 * 1024) -> None:
        self._streams: dict[str, list[Record]] = {}
        self._sequences: dict[tuple[str, str], int] = defaultdict(int)
        self._changed = asyncio.Condition()
        self._max_record_bytes = max_record_bytes
        self._offsets: dict[tuple[str, str], int] = {}

    async def create_stream(self, stream: str) -> None:
        self._streams.setdefault(stream, [])

    def _records(self, stream: str) -> list[Record]:
        try:
            return self._streams[stream]
        except KeyError:
            raise StreamNotFound(stream) from None

    async def append(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> None:
        records = self._records(stream)
        if publishing_ids is not None and len(publishing_ids) != len(payloads):
            raise ValueError("one publishing id per payload")
        if any(len(p) > self._max_record_bytes for p in payloads):
            raise PublishRejected(f"record larger than {self._max_record_bytes} bytes")
        now = int(time.time() * 1000)
        key = (stream, publisher or "")
        for i, payload in enumerate(payloads):
            if publisher is not None and publishing_ids is not None:
                pid = publishing_ids[i]
                if pid <= self._sequences[key]:
                    continue
                self._sequences[key] = pid
            records.append(Record(stream, len(records), now, bytes(payload)))
        async with self._changed:
            self._changed.notify_all()

    async def submit(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            await self.append(stream, payloads, publisher=publisher, publishing_ids=publishing_ids)
            done.set_result(None)
        except Exception as exc:
            done.set_exception(exc)
        return done

    async def last_sequence(self, stream: str, publisher: str) -> int:
        self._records(stream)
        return self._sequences[(stream, publisher)]

    def subscribe(self, stream: str, start: Position, *, batch: int = 1000) -> _MemorySubscription:
        return _MemorySubscription(self, stream, start, batch)

    async def tail(self, stream: str) -> int:
        return len(self._records(stream))

    async def close(self) -> None:
        return None

    # OffsetStore, so one object serves a test
    async def load(self, reference: str, stream: str) -> int | None:
        return self._offsets.get((reference, stream))

    async def store(self, reference: str, stream: str, offset: int) -> None:
        self._offsets[(reference, stream)] = offset

    def _start_index(self, stream: str, start: Position) -> int:
        records = self._records(stream)
        match start.kind:
            case "first":
                return 0
            case "next":
                return len(records)
            case "last":
                return max(len(records) - 1, 0)
            case "offset":
                return start.value
            case "timestamp":
                for r in records:
                    if r.timestamp_ms >= start.value:
                        return r.offset
                return len(records)
        raise AssertionError(start.kind)


class _MemorySubscription:
    def __init__(self, log: MemoryEventLog, stream: str, start: Position, batch: int) -> None:
        self._log = log
        self._stream = stream
        self._start = start
        self._batch = batch
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[list[Record]]:
        log = self._log
        index = log._start_index(self._stream, self._start)
        while not self._closed:
            records = log._records(self._stream)
            if index < len(records):
                chunk = records[index : index + self._batch]
                index += len(chunk)
                yield chunk
                continue
            async with log._changed:
                await log._changed.wait_for(partial(self._ready, index))

    def _ready(self, index: int) -> bool:
        return self._closed or len(self._log._records(self._stream)) > index

    async def close(self) -> None:
        self._closed = True
        async with self._log._changed:
            self._log._changed.notify_all()
