"""``just bench-billing``: rebuild rate of the billing view from the log, beside the raw
consume+decode rate of the same streams measured in the same run."""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid

from psycopg import AsyncConnection, sql

from bench.common import Report
from bench.log_rates import raw_consume
from events import encode
from projections.billing.rebuild import rebuild
from quotaflow.settings import Settings
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.billing.builder import LogBuilder


async def main(requests: int) -> None:
    settings = Settings()
    report = Report("billing")
    run = uuid.uuid4().hex[:6]
    topo = Topology(partitions=2, prefix=f"bench-{run}-")
    schema = f"bench_billing_{run}"
    log = RabbitEventLog(settings.stream_endpoint, name="bench-billing")
    builder = LogBuilder(partitions=2)
    builder.topology = topo
    builder.price("llama-8b", "0.0005", "0.0015")
    builder.price("smollm2", "0.0001", "0.0002")
    builder.traffic(random.Random(3), requests, gap_s=5)
    try:
        await App("bench", log, topology=topo).create_streams()
        ends: dict[str, int] = {}
        for stream, events in builder.streams.items():
            payloads = [encode(e) for e in events]
            for i in range(0, len(payloads), 5000):
                await log.append(stream, payloads[i : i + 5000])
            ends[stream] = len(payloads)
        total = sum(ends.values())
        report.add("events", total)
        report.line(f"{total} events in {len(ends)} streams")
        seconds = 0.0
        for stream, count in ends.items():
            seconds += count / await raw_consume(settings, stream, count)
        report.add("raw_consume_decode_per_s", total / seconds)
        report.line(f"raw consume+decode {report.figures['raw_consume_decode_per_s']:>10,.0f}/s")
        async with await AsyncConnection.connect(settings.postgres_dsn) as conn:
            stats = await rebuild(log, conn, schema, sorted(ends), ends=ends)
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            await conn.commit()
        report.add("rebuild_per_s", stats.rate)
        report.line(f"billing rebuild    {stats.rate:>10,.0f}/s")
    finally:
        for stream in (s for t in topo.all for s in t.streams):
            await log.delete_stream(stream)
        await log.close()
    f = report.figures
    report.add("ratio_rebuild_vs_raw_consume", f["rebuild_per_s"] / f["raw_consume_decode_per_s"])
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30_000, help="~3.7 events each")
    asyncio.run(main(parser.parse_args().requests))
