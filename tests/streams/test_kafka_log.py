"""The Kafka backend against a real Kafka-compatible broker (Tansu, started by the fixture):
the contract every backend passes, and what Kafka needs on top of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from quotaflow.tansu import TansuBroker
from streams.kafka_log import KafkaEventLog
from streams.log import Position, StreamNotFound
from tests.streams.contract import EventLogContract, collect, take


class TestKafkaEventLog(EventLogContract):
    @pytest.fixture
    async def log(self, kafka_log: KafkaEventLog) -> KafkaEventLog:
        return kafka_log

    @pytest.fixture(autouse=True)
    async def _drop_streams(self, tansu: TansuBroker, unique: str) -> AsyncIterator[None]:
        yield None
        cleaner = KafkaEventLog(tansu.bootstrap_servers, name="quotaflow-test-clean")
        await cleaner.delete_stream(unique)
        await cleaner.close()


@pytest.fixture
async def stream(kafka_log: KafkaEventLog, unique: str) -> AsyncIterator[str]:
    await kafka_log.create_stream(unique)
    yield unique
    await kafka_log.delete_stream(unique)


async def fresh_log(tansu: TansuBroker) -> KafkaEventLog:
    """Another log object: a restarted process, knowing only what the broker stores."""
    return KafkaEventLog(tansu.bootstrap_servers, name="quotaflow-test-restarted")


async def test_a_restarted_publisher_finds_its_last_id_in_the_log_and_stores_nothing_twice(
    kafka_log: KafkaEventLog, tansu: TansuBroker, stream: str
) -> None:
    ids = [(i + 1) << 16 for i in range(3000)]
    mine = [f"out-{i}".encode() for i in range(3000)]
    await kafka_log.append(stream, mine, publisher="agent:in>out", publishing_ids=ids)
    # others write after it, far more than the first window the index reads back
    await kafka_log.append(stream, [b"other"] * 5000)
    await kafka_log.append(stream, [b"x"], publisher="agent-2", publishing_ids=[7])

    restarted = await fresh_log(tansu)
    try:
        assert await restarted.last_sequence(stream, "agent:in>out") == ids[-1]
        assert await restarted.last_sequence(stream, "agent-2") == 7
        assert await restarted.last_sequence(stream, "never-wrote") == 0
        # the crashed process re-sends its last batch and goes on
        await restarted.append(
            stream,
            [*mine[-500:], b"out-3000"],
            publisher="agent:in>out",
            publishing_ids=[*ids[-500:], 3001 << 16],
        )
        records = await collect(restarted, stream, Position.first())
    finally:
        await restarted.close()
    data = [r.data for r in records]
    assert data == [*mine, *[b"other"] * 5000, b"x", b"out-3000"]
    assert [r.offset for r in records] == list(range(len(data)))


async def test_a_failed_batch_fails_the_later_batches_of_its_publisher_unsent(
    kafka_log: KafkaEventLog, tansu: TansuBroker, stream: str
) -> None:
    """A publisher's stored ids are always a prefix of what it sent: no hole that "skip what
    is at or below the last stored id" would turn into a lost record."""
    big = [b"a" * 1000] * 3000  # several producer batches, confirmed one after the other
    first = await kafka_log.submit(stream, big, publisher="p", publishing_ids=range(1, 3001))
    second = await kafka_log.submit(stream, [b"b"], publisher="p", publishing_ids=[3001])
    third = await kafka_log.submit(stream, [b"c"], publisher="p", publishing_ids=[3002])
    second.cancel()  # fails while the first batch is still in flight
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    with pytest.raises(ConnectionError, match="earlier batch"):
        await third
    assert [r.data for r in (await collect(kafka_log, stream, Position.first()))[3000:]] == []
    # the publisher asks the log again, and re-sends what was not stored
    assert await kafka_log.last_sequence(stream, "p") == 3000
    await kafka_log.append(stream, [b"b", b"c"], publisher="p", publishing_ids=[3001, 3002])
    records = await collect(kafka_log, stream, Position.first())
    assert [r.data for r in records[3000:]] == [b"b", b"c"]
    assert len(records) == 3002


async def test_committed_positions_are_kafka_consumer_group_offsets(
    kafka_log: KafkaEventLog, tansu: TansuBroker, stream: str
) -> None:
    await kafka_log.append(stream, [b"r"] * 10)
    await kafka_log.store("quotaflow.billing", stream, 6)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=tansu.bootstrap_servers, group_id="quotaflow.billing"
    )
    await consumer.start()
    try:
        # Kafka's committed offset is the next one to read
        assert await consumer.committed(TopicPartition(stream, 0)) == 7
    finally:
        await consumer.stop()
    restarted = await fresh_log(tansu)
    try:
        assert await restarted.load("quotaflow.billing", stream) == 6
    finally:
        await restarted.close()


async def test_a_missing_stream_is_never_auto_created(
    kafka_log: KafkaEventLog, unique: str
) -> None:
    missing = unique + "-missing"
    with pytest.raises(StreamNotFound):
        await kafka_log.append(missing, [b"x"], publisher="p", publishing_ids=[1])
    with pytest.raises(StreamNotFound):
        await kafka_log.tail(missing)
    sub = kafka_log.subscribe(missing, Position.first())
    with pytest.raises(StreamNotFound):
        await take(sub.__aiter__(), 1)
    await sub.close()
    assert not await kafka_log.stream_exists(missing)


async def test_batches_written_as_one_produce_request_are_read_to_their_end(
    kafka_log: KafkaEventLog, stream: str
) -> None:
    await kafka_log.append(stream, [str(i).encode() for i in range(500)])
    assert await kafka_log.tail(stream) == 500
    last = kafka_log.subscribe(stream, Position.last())
    got = await take(last.__aiter__(), 1)
    await last.close()
    assert [r.data for r in got] == [b"499"]
    sub = kafka_log.subscribe(stream, Position.next())
    reader = asyncio.create_task(take(sub.__aiter__(), 1))
    await asyncio.sleep(0.5)
    await kafka_log.append(stream, [b"new"])
    assert [r.data for r in await reader] == [b"new"]
    await sub.close()
