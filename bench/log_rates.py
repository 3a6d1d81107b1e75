"""``just bench-log``: raw rstream against the EventLog, same broker, same events, one run.

* raw publish: rstream ``Producer.send_batch`` (batches of 1,000, confirms counted by callback)
* raw consume+decode: rstream ``Consumer`` callback decoding every record with the codec
* EventLog publish: ``RabbitEventLog.append`` (batches of 1,000, 4 appends in flight)
* EventLog consume+decode: ``RabbitEventLog.subscribe`` decoding every record

Ratios are EventLog / raw. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from rstream import ConfirmationStatus, Consumer, MessageContext, Producer

from bench.common import Report, sample_events, timed
from events import decode
from quotaflow.settings import Settings
from streams.log import Position
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


async def log_publish(log: RabbitEventLog, stream: str, payloads: list[bytes]) -> float:
    await log.create_stream(stream)
    window = asyncio.Semaphore(4)

    async def one(batch: list[bytes]) -> None:
        async with window:
            await log.append(stream, batch)

    with timed(len(payloads)) as t:
        async with asyncio.TaskGroup() as tg:
            for i in range(0, len(payloads), BATCH):
                await window.acquire()
                window.release()
                tg.create_task(one(payloads[i : i + BATCH]))
    return t.rate


async def log_consume(log: RabbitEventLog, stream: str, count: int) -> float:
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


async def main(count: int) -> None:
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
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().events))
