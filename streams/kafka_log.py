"""The Kafka backend of :class:`streams.log.EventLog`, over aiokafka.

Mapping
-------
A quotaflow *stream* is one Kafka **topic with one partition** (``requests-0`` … under the
same names as on RabbitMQ): offsets are then dense and ordered per stream, exactly what the
port promises, and a quotaflow topic with N partitions is N Kafka topics, routed by tenant
with the same murmur3 hash (:mod:`streams.topics`). Positions: ``first``/``next`` are the
partition's beginning/end offsets, ``last`` is the last record, ``timestamp`` is Kafka's
time index (ListOffsets by time; record timestamps are the producer's CreateTime).
Committed positions (:class:`streams.log.OffsetStore`) are Kafka consumer-group offsets:
group = the consumer's reference, committed as a group without members, stored as
``offset + 1`` (Kafka commits the next offset to read).

Exactly-once without an idempotent producer
-------------------------------------------
RabbitMQ deduplicates by (publisher name, publishing id) in the broker. This backend does
not use Kafka's idempotent or transactional producer (its sequence numbers are per producer
id, which a restarted process does not get back, and the test broker lacks both); instead:

1. A named publisher's records carry its name and publishing id in two record headers
   (``qf-pub``, ``qf-seq``). :meth:`KafkaEventLog.last_sequence` reads them back from the
   tail of the stream (:mod:`streams.kafka_sequences`): after a restart the publisher's
   highest stored id is found in the log itself, not in any process's memory.
2. ``append``/``submit`` drop every record whose id is not above the publisher's last id
   (asked from the log on first use, then tracked), so a re-sent batch stores nothing twice,
   within a process and after a restart.
3. A named publisher has **one batch in flight** per stream: batch k+1 is sent only after
   batch k is confirmed, and when a batch fails every later batch of that publisher fails
   unsent (its last id is then asked from the log again). So the stored ids of a publisher
   are always a prefix of what it sent, never a sequence with a hole, and "skip what is at
   or below the last stored id" cannot skip an output that is not there. (Without this, a
   timed-out batch followed by a successful one would lose the first on re-processing.)

The agent runtime (:mod:`streams.runtime.worker`) does the rest as on RabbitMQ: outputs get
publishing ids derived from their cause's offset and are confirmed before the input position
is committed. What the backend cannot do is fence a *second* process writing as the same
publisher at the same time; partition ownership (one worker per partition) guarantees that.
Underneath, every derived event has a deterministic event id (``events.derive_id``) and the
consumers that matter are idempotent by it (the billing ledger keeps one row per event id),
so even a duplicate that slipped through would not be counted twice.

Topics are created explicitly (``create_stream``); brokers that auto-create topics are never
asked to: existence is checked with auto-creation off, and a missing stream is
:class:`~streams.log.StreamNotFound`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
from aiokafka.producer.message_accumulator import BatchBuilder

from streams.kafka_client import KafkaRequests, KafkaUnavailable, kafka_errors
from streams.kafka_sequences import Headers, SequenceIndex, publisher_headers
from streams.kafka_subscription import KafkaSubscription
from streams.log import LogError, Position, PublishRejected, StreamNotFound

# its one message, at INFO, is every manual partition assignment: ours, on every tail()
logging.getLogger("aiokafka.consumer.subscription_state").setLevel(logging.WARNING)

#: The largest record (value plus headers) this backend sends.
MAX_RECORD_BYTES = 1024 * 1024 - 1024
_BATCH_BYTES = 1024 * 1024
_REQUEST_TIMEOUT_MS = 30_000


@dataclass
class _Publisher:
    """A named publisher on one stream: its last id and its one batch in flight."""

    last: int | None = None  # None: ask the log
    epoch: int = 0  # bumped when a batch fails; later batches of older epochs fail unsent
    tail: asyncio.Future[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KafkaEventLog:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        name: str = "quotaflow",
        replication_factor: int = 1,
        topic_config: dict[str, str] | None = None,
        request_timeout_ms: int = _REQUEST_TIMEOUT_MS,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._name = name
        self._replication = replication_factor
        self._topic_config = dict(topic_config or {})
        self._timeout_ms = request_timeout_ms
        self._start_lock = asyncio.Lock()
        self._started = False
        self._client: AIOKafkaClient | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._scanner: AIOKafkaConsumer | None = None
        self._scan_lock = asyncio.Lock()
        self._requests: KafkaRequests | None = None
        self._known: set[str] = set()
        self._enqueuing: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._publishers: dict[tuple[str, str], _Publisher] = {}
        self._sequences = SequenceIndex(self)
        self._subscriptions: set[KafkaSubscription] = set()
        self._ids = itertools.count()

    # -- clients ------------------------------------------------------------------------

    def consumer(self, role: str) -> AIOKafkaConsumer:
        """A consumer outside any group (positions are ours), reading from partitions."""
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self._name}-{role}-{next(self._ids)}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self._timeout_ms,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * _BATCH_BYTES,
        )

    async def _start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            servers = self.bootstrap_servers
            with kafka_errors(f"connecting to {servers}"):
                self._client = AIOKafkaClient(
                    bootstrap_servers=servers,
                    client_id=self._name,
                    request_timeout_ms=self._timeout_ms,
                )
                await self._client.bootstrap()
                self._admin = AIOKafkaAdminClient(
                    bootstrap_servers=servers,
                    client_id=f"{self._name}-admin",
                    request_timeout_ms=self._timeout_ms,
                )
                await self._admin.start()
                self._producer = AIOKafkaProducer(
                    bootstrap_servers=servers,
                    client_id=f"{self._name}-producer",
                    acks="all",
                    enable_idempotence=False,
                    linger_ms=0,
                    max_batch_size=_BATCH_BYTES,
                    max_request_size=2 * _BATCH_BYTES,
                    request_timeout_ms=self._timeout_ms,
                )
                await self._producer.start()
                self._probe = self.consumer("probe")
                await self._probe.start()
            self._requests = KafkaRequests(self._client)
            self._started = True

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
        for pub in self._publishers.values():
            if pub.tail is not None:
                with contextlib.suppress(BaseException):
                    await pub.tail
        started, self._started = self._started, False
        if not started:
            return
        for closer in (
            self._producer.stop if self._producer else None,
            self._probe.stop if self._probe else None,
            self._scanner.stop if self._scanner else None,
            self._admin.close if self._admin else None,
            self._client.close if self._client else None,
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        self._producer = self._probe = self._scanner = None
        self._admin = None
        self._client = None
        self._publishers.clear()

    # -- topics -------------------------------------------------------------------------

    async def create_stream(self, stream: str) -> None:
        await self._start()
        assert self._admin is not None
        topic = NewTopic(stream, 1, self._replication, topic_configs=self._topic_config)
        with kafka_errors(f"creating {stream}"):
            response = await self._admin.create_topics([topic])
        for _name, code, *message in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise LogError(f"creating {stream}: error {code} {message}")
        self._known.add(stream)

    async def delete_stream(self, stream: str) -> None:
        await self._start()
        assert self._admin is not None
        self._known.discard(stream)
        self._sequences.forget(stream)
        for key in [k for k in self._publishers if k[0] == stream]:
            del self._publishers[key]
        with kafka_errors(f"deleting {stream}"):
            response = await self._admin.delete_topics([stream])
        for _name, code in response.topic_error_codes:
            if code not in (0, UnknownTopicOrPartitionError.errno):
                raise LogError(f"deleting {stream}: error {code}")

    async def stream_exists(self, stream: str) -> bool:
        await self._start()
        assert self._requests is not None
        return await self._requests.topic_exists(stream)

    async def require(self, stream: str) -> None:
        """Raise StreamNotFound unless ``stream`` exists (known streams are not asked again)."""
        if stream in self._known:
            return
        if not await self.stream_exists(stream):
            raise StreamNotFound(stream)
        self._known.add(stream)

    # -- publishing ---------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> None:
        await (
            await self.submit(stream, payloads, publisher=publisher, publishing_ids=publishing_ids)
        )

    async def submit(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        publisher: str | None = None,
        publishing_ids: Sequence[int] | None = None,
    ) -> asyncio.Future[None]:
        """Send now; the future completes when every record is confirmed (``acks=all``).

        Submissions of one publisher (or of unnamed publishers) to one stream are stored in
        submission order. A named publisher's batches are sent one after the other, each
        once the one before is confirmed (see the module docstring).
        """
        if publishing_ids is not None and len(publishing_ids) != len(payloads):
            raise ValueError("one publishing id per payload")
        if publishing_ids is not None and publisher is None:
            raise ValueError("publishing ids need a named publisher")
        for payload in payloads:
            if len(payload) > MAX_RECORD_BYTES:
                raise PublishRejected(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        if not payloads:
            return _done()
        await self._start()
        await self.require(stream)
        if publisher is None:
            futures = await self._enqueue(stream, [(p, []) for p in payloads], one_at_a_time=False)
            return asyncio.ensure_future(self._confirmed(stream, futures))
        return await self._submit_named(stream, payloads, publisher, publishing_ids)

    async def _submit_named(
        self,
        stream: str,
        payloads: Sequence[bytes],
        publisher: str,
        publishing_ids: Sequence[int] | None,
    ) -> asyncio.Future[None]:
        pub = self._publishers.setdefault((stream, publisher), _Publisher())
        async with pub.lock:
            last = pub.last
            if last is None:
                last = await self._sequences.last(stream, publisher)
            ids = publishing_ids or range(last + 1, last + 1 + len(payloads))
            records: list[tuple[bytes, Headers]] = []
            for pid, payload in zip(ids, payloads, strict=True):
                if pid > last:
                    records.append((payload, publisher_headers(publisher, pid)))
                    last = pid
            pub.last = last
            if not records:
                return _done()
            epoch = pub.epoch
            link = asyncio.ensure_future(self._send_after(stream, pub, epoch, pub.tail, records))
            link.add_done_callback(partial(_failed_link, pub, epoch))
            pub.tail = link
            return link

    async def _send_after(
        self,
        stream: str,
        pub: _Publisher,
        epoch: int,
        previous: asyncio.Future[None] | None,
        records: list[tuple[bytes, Headers]],
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is read from the epoch
        if pub.epoch != epoch:
            raise KafkaUnavailable(f"{stream}: an earlier batch of this publisher failed")
        await self._enqueue(stream, records, one_at_a_time=True)

    async def _enqueue(
        self, stream: str, records: Sequence[tuple[bytes, Headers]], *, one_at_a_time: bool
    ) -> list[asyncio.Future[object]]:
        """Hand records to the producer in batches of up to ~1 MiB; their confirmations.

        ``one_at_a_time``: wait for each batch's confirmation before sending the next.
        Otherwise the batches of one call are enqueued together, before any other call's.
        One caller at a time adds batches of a stream to the producer: aiokafka's
        ``send_batch`` times out when several wait for the same partition's queue.
        """
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable("the log is closed")
        batches: list[BatchBuilder] = [producer.create_batch()]
        for payload, headers in records:
            if batches[-1].append(key=None, value=payload, timestamp=None, headers=headers) is None:
                batches.append(producer.create_batch())
                batches[-1].append(key=None, value=payload, timestamp=None, headers=headers)
        lock = self._enqueuing[stream]
        futures: list[asyncio.Future[object]] = []
        with kafka_errors(f"publishing to {stream}"):
            if one_at_a_time:
                for batch in batches:
                    async with lock:
                        confirmed = await producer.send_batch(batch, stream, partition=0)
                    await confirmed
            else:
                async with lock:
                    for batch in batches:
                        futures.append(await producer.send_batch(batch, stream, partition=0))
        return futures

    async def _confirmed(self, stream: str, futures: list[asyncio.Future[object]]) -> None:
        with kafka_errors(f"publishing to {stream}"):
            for future in futures:
                await future

    async def last_sequence(self, stream: str, publisher: str) -> int:
        await self._start()
        await self.require(stream)
        found = await self._sequences.last(stream, publisher)
        pub = self._publishers.get((stream, publisher))
        if pub is not None and pub.last is not None and (pub.tail is None or pub.tail.done()):
            pub.last = max(pub.last, found)  # another process may have written since
        return found

    # -- the sequence index's reader ------------------------------------------------------

    async def bounds(self, stream: str) -> tuple[int, int]:
        """The first offset still stored, and one past the last record.

        Some brokers (Tansu 0.6) answer "latest" with the last *batch*'s base offset + 1,
        so the end is read off the last batch itself: one fetch from the reported end - 1.
        """
        await self._start()
        assert self._probe is not None
        tp = TopicPartition(stream, 0)
        with kafka_errors(f"offsets of {stream}"):
            begin = int((await self._probe.beginning_offsets([tp]))[tp])
            end = int((await self._probe.end_offsets([tp]))[tp])
        if end <= begin:
            return begin, end
        async with self._scan_lock:
            scanner = await self._scanning(tp, end - 1)
            with kafka_errors(f"reading {stream}"):
                found = await scanner.getmany(tp, timeout_ms=self._timeout_ms, max_records=1 << 20)
        records = found.get(tp, [])
        return begin, max(end, records[-1].offset + 1) if records else end

    async def _scanning(self, tp: TopicPartition, offset: int) -> AIOKafkaConsumer:
        """The scanning consumer, on ``tp`` at ``offset`` (hold the scan lock)."""
        if self._scanner is None:
            scanner = self.consumer("scan")
            with kafka_errors("starting a consumer"):
                await scanner.start()
            self._scanner = scanner
        self._scanner.assign([tp])
        self._scanner.seek(tp, offset)
        return self._scanner

    async def headers(self, stream: str, start: int, end: int) -> AsyncIterator[list[Headers]]:
        async with self._scan_lock:
            tp = TopicPartition(stream, 0)
            scanner = await self._scanning(tp, start)
            position = start
            idle = 0
            while position < end:
                with kafka_errors(f"reading {stream}"):
                    found = await scanner.getmany(tp, timeout_ms=1000, max_records=5000)
                records = found.get(tp, [])
                if not records:
                    idle += 1
                    if idle * 1000 > self._timeout_ms:
                        raise KafkaUnavailable(f"{stream}: no records at {position} (end {end})")
                    continue
                idle = 0
                position = records[-1].offset + 1
                yield [r.headers for r in records if r.offset < end]

    # -- offsets (the OffsetStore port) ----------------------------------------------------

    async def load(self, reference: str, stream: str) -> int | None:
        await self._start()
        await self.require(stream)
        assert self._requests is not None
        committed = await self._requests.committed(reference, stream, 0)
        return None if committed is None else committed - 1

    async def store(self, reference: str, stream: str, offset: int) -> None:
        await self._start()
        assert self._requests is not None
        await self._requests.commit(reference, stream, 0, offset + 1)

    # -- reading --------------------------------------------------------------------------

    def subscribe(self, stream: str, start: Position, *, batch: int = 1000) -> KafkaSubscription:
        sub = KafkaSubscription(self, stream, start, batch)
        self._subscriptions.add(sub)
        return sub

    def forget(self, sub: KafkaSubscription) -> None:
        self._subscriptions.discard(sub)

    async def tail(self, stream: str) -> int:
        await self.require(stream)
        return (await self.bounds(stream))[1]


def _failed_link(pub: _Publisher, epoch: int, link: asyncio.Future[None]) -> None:
    """A batch failed (or was cancelled, perhaps before it was sent): its publisher's later
    batches of the same epoch fail unsent, and its last id is asked from the log again."""
    if (link.cancelled() or link.exception() is not None) and pub.epoch == epoch:
        pub.epoch += 1
        pub.last = None


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done
