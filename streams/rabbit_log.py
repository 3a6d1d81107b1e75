"""The RabbitMQ Streams backend of :class:`streams.log.EventLog`, over rstream's protocol client.

rstream's high-level ``Producer``/``Consumer`` allow one publisher and one subscriber per
stream per object, call back once per message, and swallow errors raised in callbacks; we
use its frame layer (``rstream.client.Client``) directly:

* **Publishing**: one connection per log object; a publisher per (stream, name). Batches are
  split into frames below ``frame_max`` and ``append`` returns when the broker has confirmed
  every publishing id. Named publishers get broker-side deduplication: ids at or below the
  publisher's stored sequence are confirmed but not stored.
* **Subscribing**: one connection per subscription, chunk-level delivery, credit granted only
  after a chunk has been handed over (bounded memory, real backpressure). On connection loss
  the subscription reconnects and resubscribes from the next offset it has not yielded: a
  broker restart is invisible to the consumer, except as a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from rstream import exceptions as rexc
from rstream import schema
from rstream.client import Client
from rstream.constants import OffsetType

from quotaflow.settings import StreamEndpoint
from streams.log import Position, PublishRejected, Record, StreamNotFound
from streams.rabbit_connection import TRANSIENT_ERRORS, close_quietly, connect_with_retry

log = logging.getLogger(__name__)

T = TypeVar("T")

_FRAME_OVERHEAD = 64
_MESSAGE_OVERHEAD = 12  # publishing id (8) + length (4)
_CONFIRM_TIMEOUT = 30.0
#: Chunks the broker may send ahead of the consumer (each is granted back once handed over).
_INITIAL_CREDIT = 16

_OFFSET_TYPES = {
    "first": OffsetType.FIRST,
    "last": OffsetType.LAST,
    "next": OffsetType.NEXT,
    "offset": OffsetType.OFFSET,
    "timestamp": OffsetType.TIMESTAMP,
}


@dataclass(frozen=True, slots=True)
class Retention:
    max_bytes: int = 20 * 1024**3
    max_segment_bytes: int = 500 * 1024**2
    max_age: str | None = None  # e.g. "30D"

    def arguments(self) -> dict[str, object]:
        args: dict[str, object] = {
            "max-length-bytes": self.max_bytes,
            "stream-max-segment-size-bytes": self.max_segment_bytes,
        }
        if self.max_age:
            args["max-age"] = self.max_age
        return args


class _Waiter:
    """Outstanding publishing ids of one ``append`` call."""

    __slots__ = ("error", "event", "remaining")

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.event = asyncio.Event()
        self.error: BaseException | None = None

    def done_one(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()


@dataclass
class _Publisher:
    id: int
    stream: str
    name: str | None
    client: Client
    next_id: int = 1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: dict[int, _Waiter] = field(default_factory=dict)


class RabbitEventLog:
    def __init__(
        self,
        endpoint: StreamEndpoint,
        *,
        retention: Retention | None = None,
        name: str = "quotaflow",
        connect_timeout: float = 60.0,
    ) -> None:
        self._endpoint = endpoint
        self._retention = retention or Retention()
        self._name = name
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._connect_lock = asyncio.Lock()
        self._publishers: dict[tuple[str, str | None], _Publisher] = {}
        self._by_id: dict[int, _Publisher] = {}
        self._ids = itertools.count()
        self._subscriptions: set[RabbitSubscription] = set()
        self._closing: set[asyncio.Task[None]] = set()

    # -- connection -------------------------------------------------------------------

    async def _connection(self) -> Client:
        client = self._client
        if client is not None and client.is_connection_alive():
            return client
        async with self._connect_lock:
            if self._client is not None and self._client.is_connection_alive():
                return self._client
            if self._client is not None:
                self._drop_connection(ConnectionError("stream connection lost"))
            client = await connect_with_retry(
                self._endpoint, self._name, timeout=self._connect_timeout
            )
            client.add_handler(schema.PublishConfirm, self._on_confirm, name="quotaflow-confirm")
            client.add_handler(schema.PublishError, self._on_error, name="quotaflow-error")
            self._client = client
            return client

    def _drop_connection(self, error: BaseException) -> None:
        for pub in self._by_id.values():
            for waiter in set(pub.pending.values()):
                waiter.fail(error)
            pub.pending.clear()
        self._publishers.clear()
        self._by_id.clear()
        old, self._client = self._client, None
        if old is not None:
            task = asyncio.ensure_future(close_quietly(old))
            task.add_done_callback(lambda _: None)

    def _close_later(self, client: Client) -> None:
        task = asyncio.create_task(close_quietly(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            for pub in self._by_id.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.delete_publisher(pub.id), 2)
            self._publishers.clear()
            self._by_id.clear()
            await close_quietly(client)

    # -- streams ----------------------------------------------------------------------

    async def create_stream(self, stream: str) -> None:
        async def create() -> None:
            client = await self._connection()
            try:
                await client.create_stream(stream, self._retention.arguments())
            except rexc.StreamAlreadyExists:
                return

        await self._retrying(create)

    async def delete_stream(self, stream: str) -> None:
        client = await self._connection()
        with contextlib.suppress(rexc.StreamDoesNotExist):
            await client.delete_stream(stream)

    async def stream_exists(self, stream: str) -> bool:
        client = await self._connection()
        return bool(await client.stream_exists(stream))

    # -- publishing -------------------------------------------------------------------

    async def _publisher(self, stream: str, name: str | None) -> _Publisher:
        key = (stream, name)
        client = await self._connection()
        pub = self._publishers.get(key)
        if pub is not None and pub.client is client:
            return pub
        pub_id = next(self._ids) % 256
        while pub_id in self._by_id:
            pub_id = next(self._ids) % 256
        try:
            await client.declare_publisher(stream=stream, reference=name, publisher_id=pub_id)
        except rexc.StreamDoesNotExist:
            raise StreamNotFound(stream) from None
        pub = _Publisher(pub_id, stream, name, client)
        if name is not None:
            pub.next_id = await client.query_publisher_sequence(stream, name) + 1
        self._publishers[key] = pub
        self._by_id[pub_id] = pub
        return pub

    async def append(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> None:
        if not payloads:
            return
        self._check(publisher, payloads, publishing_ids)

        async def once() -> None:
            client, waiter = await self._send(stream, payloads, publisher, publishing_ids)
            await self._confirmed(client, waiter)

        await self._retrying(once)

    async def submit(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> asyncio.Future[None]:
        """Send now; the returned future completes when every record is confirmed.

        Lets a caller overlap the broker's confirms with its next batch of work. Submissions
        to one publisher are stored in submission order.
        """
        self._check(publisher, payloads, publishing_ids)
        if not payloads:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        client, waiter = await self._retrying(
            lambda: self._send(stream, payloads, publisher, publishing_ids)
        )
        return asyncio.ensure_future(self._confirmed(client, waiter))

    @staticmethod
    def _check(
        publisher: str | None, payloads: Sequence[bytes], publishing_ids: Sequence[int] | None
    ) -> None:
        if publishing_ids is not None and len(publishing_ids) != len(payloads):
            raise ValueError("one publishing id per payload")
        if publishing_ids is not None and publisher is None:
            raise ValueError("publishing ids need a named publisher")

    async def _send(
        self,
        stream: str,
        payloads: Sequence[bytes],
        publisher: str | None,
        publishing_ids: Sequence[int] | None,
    ) -> tuple[Client, _Waiter]:
        client = await self._connection()
        pub = await self._publisher(stream, publisher)
        if pub.client is not client:  # the connection was replaced while declaring
            raise ConnectionError("stream connection replaced")
        limit = client.frame_max - _FRAME_OVERHEAD
        waiter = _Waiter(len(payloads))
        async with pub.lock:
            if publishing_ids is None:
                ids: Sequence[int] = range(pub.next_id, pub.next_id + len(payloads))
            else:
                ids = publishing_ids
            pub.next_id = max(pub.next_id, ids[-1] + 1)
            frame: list[schema.Message] = []
            size = 0
            for pid, payload in zip(ids, payloads, strict=True):
                need = len(payload) + _MESSAGE_OVERHEAD
                if need > limit:
                    raise PublishRejected(f"record of {len(payload)} bytes exceeds the frame size")
                if size + need > limit:
                    await client.send_publish_frame(
                        schema.Publish(publisher_id=pub.id, messages=frame)
                    )
                    frame, size = [], 0
                pub.pending[pid] = waiter
                frame.append(schema.Message(publishing_id=pid, filter_value=None, data=payload))
                size += need
            await client.send_publish_frame(schema.Publish(publisher_id=pub.id, messages=frame))
        return client, waiter

    async def _confirmed(self, client: Client, waiter: _Waiter) -> None:
        deadline = time.monotonic() + _CONFIRM_TIMEOUT
        while not waiter.event.is_set():
            if not client.is_connection_alive():
                self._drop_connection(ConnectionError("stream connection lost while publishing"))
                break
            if time.monotonic() > deadline:
                self._drop_connection(TimeoutError("no publish confirm within 30 s"))
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), 1.0)
        if waiter.error is not None:
            raise waiter.error

    def _on_confirm(self, frame: schema.PublishConfirm) -> None:
        pub = self._by_id.get(frame.publisher_id)
        if pub is None:
            return
        pending = pub.pending
        for pid in frame.publishing_ids:
            waiter = pending.pop(pid, None)
            if waiter is not None:
                waiter.done_one()

    def _on_error(self, frame: schema.PublishError) -> None:
        pub = self._by_id.get(frame.publisher_id)
        if pub is None:
            return
        for err in frame.errors:
            waiter = pub.pending.pop(err.publishing_id, None)
            if waiter is None:
                continue
            exc = rexc.ServerError.from_code(err.response_code)
            if isinstance(exc, rexc.StreamDoesNotExist):
                waiter.fail(StreamNotFound(pub.stream))
            elif isinstance(exc, TRANSIENT_ERRORS):
                waiter.fail(exc)
            else:
                waiter.fail(PublishRejected(f"{pub.stream}: {exc!r}"))

    async def last_sequence(self, stream: str, publisher: str) -> int:
        async def query() -> int:
            client = await self._connection()
            return int(await client.query_publisher_sequence(stream, publisher))

        return await self._retrying(query)

    # -- offsets (the OffsetStore port) -------------------------------------------------

    async def load(self, reference: str, stream: str) -> int | None:
        async def query() -> int | None:
            client = await self._connection()
            try:
                return int(await client.query_offset(stream, reference))
            except rexc.OffsetNotFound:
                return None
            except rexc.StreamDoesNotExist:
                raise StreamNotFound(stream) from None

        return await self._retrying(query)

    async def store(self, reference: str, stream: str, offset: int) -> None:
        client = await self._connection()
        await client.store_offset(stream=stream, reference=reference, offset=offset)

    # -- reading ------------------------------------------------------------------------

    def subscribe(self, stream: str, start: Position, *, batch: int = 1000) -> RabbitSubscription:
        sub = RabbitSubscription(self, stream, start, batch)
        self._subscriptions.add(sub)
        return sub

    async def tail(self, stream: str) -> int:
        """Subscribe at the last chunk: its first offset plus its entries is the tail.

        RabbitMQ 3.10 has no stream-stats command; an empty stream delivers nothing, which
        we take as tail 0 after a short wait.
        """

        async def probe() -> int:
            client = await connect_with_retry(
                self._endpoint, f"{self._name}-tail", timeout=self._connect_timeout
            )
            got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            def on_deliver(frame: schema.Deliver) -> None:
                if not got.done():
                    got.set_result(frame.chunk_first_offset + frame.num_entries)

            try:
                client.add_handler(schema.Deliver, on_deliver, name="0")
                await client.run_queue_listener_task(0, on_deliver)
                try:
                    await client.subscribe(
                        stream, 0, schema.OffsetSpec.from_params(OffsetType.LAST, None), 1
                    )
                except rexc.StreamDoesNotExist:
                    raise StreamNotFound(stream) from None
                try:
                    return await asyncio.wait_for(got, 0.5)
                except TimeoutError:
                    return 0
            finally:
                self._close_later(client)

        return await self._retrying(probe)

    async def _retrying(self, op: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        deadline = time.monotonic() + (timeout or self._connect_timeout)
        delay = 0.1
        while True:
            try:
                return await op()
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.info("stream operation failed (%r), retrying in %.1fs", exc, delay)
                if self._client is not None and not self._client.is_connection_alive():
                    self._drop_connection(ConnectionError("stream connection lost"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


class RabbitSubscription:
    def __init__(self, log: RabbitEventLog, stream: str, start: Position, batch: int) -> None:
        self._log = log
        self._stream = stream
        self._start = start
        self._batch = batch
        self._closed = False
        self._client: Client | None = None
        self._wake: asyncio.Queue[list[Record] | None] = asyncio.Queue(maxsize=_INITIAL_CREDIT)

    async def __aiter__(self) -> AsyncIterator[list[Record]]:
        next_offset: int | None = None
        delay = 0.1
        while not self._closed:
            start = self._start if next_offset is None else Position.offset(next_offset)
            try:
                await self._subscribe(start)
                delay = 0.1
                while not self._closed:
                    try:
                        chunk = await asyncio.wait_for(self._wake.get(), 1.0)
                    except TimeoutError:
                        if self._client is None or not self._client.is_connection_alive():
                            raise ConnectionError("subscription connection lost") from None
                        continue
                    if chunk is None:
                        return
                    if next_offset is not None:
                        chunk = [r for r in chunk if r.offset >= next_offset]
                        if not chunk:
                            continue
                    for i in range(0, len(chunk), self._batch):
                        part = chunk[i : i + self._batch]
                        next_offset = part[-1].offset + 1
                        yield part
            except rexc.StreamDoesNotExist:
                raise StreamNotFound(self._stream) from None
            except TRANSIENT_ERRORS as exc:
                if self._closed:
                    return
                log.warning("%s: subscription lost (%r), resubscribing", self._stream, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                await self._disconnect()

    async def _subscribe(self, start: Position) -> None:
        self._wake = asyncio.Queue(maxsize=_INITIAL_CREDIT)
        client = await connect_with_retry(
            self._log._endpoint, f"{self._log._name}-sub", timeout=self._log._connect_timeout
        )
        self._client = client
        stream = self._stream
        minimum = start.value if start.kind == "offset" else 0
        wake = self._wake

        async def on_deliver(frame: schema.Deliver) -> None:
            if frame.subscription_id != 0:
                return
            first, ts = frame.chunk_first_offset, frame.timestamp
            records = [
                Record(stream, first + i, ts, data)
                for i, data in enumerate(frame.get_messages())
                if first + i >= minimum
            ]
            if records:
                await wake.put(records)
            await client.credit(0, 1)

        client.add_handler(schema.Deliver, on_deliver, name="0")
        await client.run_queue_listener_task(0, on_deliver)
        kind = _OFFSET_TYPES[start.kind]
        value = start.value if start.kind in ("offset", "timestamp") else None
        await client.subscribe(
            stream, 0, schema.OffsetSpec.from_params(kind, value), _INITIAL_CREDIT
        )

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # closing an rstream connection takes ~0.3 s (a Close round trip and a sleep):
            # do it in the background; the log waits for these when it closes
            self._log._close_later(client)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._log._subscriptions.discard(self)
        with contextlib.suppress(asyncio.QueueFull):
            self._wake.put_nowait(None)
        await self._disconnect()
