"""``just bench-agents``: the runtime's pass-through agent against the raw ceiling.

* ceiling: rstream ``Consumer`` + ``Producer`` moving the same bytes from one stream to
  another (no decode, no encode, batches of 1,000 re-published as they arrive, confirms
  counted)
* agent: ``streams.agents.passthrough`` on the runtime — decode, re-emit a derived event,
  encode, publish with exactly-once publishing ids, commit offsets

Both move the same N events in the same run; the ratio is agent / ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from rstream import ConfirmationStatus, Consumer, MessageContext, Producer

from bench.common import Report, sample_events
from quotaflow.settings import Settings
from streams.agents.passthrough import register_passthrough
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from streams.topics import Topology


async def ceiling(settings: Settings, source: str, sink: str, count: int) -> float:
    ep = settings.stream_endpoint
    confirmed = 0
    done = asyncio.Event()
    buffer: list[bytes] = []

    def on_confirm(status: ConfirmationStatus) -> None:
        nonlocal confirmed
        confirmed += 1
        if confirmed == count:
            done.set()

    async with (
        Producer(ep.host, ep.port, username=ep.username, password=ep.password) as producer,
        Consumer(ep.host, ep.port, username=ep.username, password=ep.password) as consumer,
    ):
        await producer.create_stream(sink, exists_ok=True)
        seen = 0

        async def on_message(msg: bytes, ctx: MessageContext) -> None:
            nonlocal seen
            buffer.append(msg)
            seen += 1
            if len(buffer) >= 1000 or seen == count:
                batch = buffer[:]
                buffer.clear()
                await producer.send_batch(sink, batch, on_publish_confirm=on_confirm)

        start = time.perf_counter()
        await consumer.subscribe(source, on_message)
        await asyncio.wait_for(done.wait(), 300)
        return count / (time.perf_counter() - start)


async def agent(settings: Settings, topo: Topology, log: RabbitEventLog, count: int) -> float:
    app = App("bench", log, topology=topo)
    register_passthrough(app, app.topic(topo.requests), app.topic(topo.quota))
    stop = asyncio.Event()
    runner = AgentRunner(app, ["passthrough"], StaticOwnership(), interval=0.2, lag_every=10**9)
    start = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))
    source = topo.requests.stream(0)

    def processed() -> int:
        return sum(w._done_pos.get(source, -1) + 1 for w, _ in runner.workers.values())

    while processed() < count:  # noqa: ASYNC110 - outputs confirmed, positions committed
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return count / elapsed


async def main(count: int) -> None:
    settings = Settings()
    report = Report("agents")
    run = uuid.uuid4().hex[:6]
    topo = Topology(partitions=1, prefix=f"bench-{run}-")
    log = RabbitEventLog(settings.stream_endpoint, name="bench-agents")
    raw_in, raw_out = f"bench-{run}-raw-in", f"bench-{run}-raw-out"
    try:
        app = App("bench", log, topology=topo)
        await app.create_streams()
        report.line(f"publishing {count} events to both sources")
        payloads = sample_events(count, tenants=1)
        for stream in (raw_in, topo.requests.stream(0)):
            await log.create_stream(stream)
            for i in range(0, count, 5000):
                await log.append(stream, payloads[i : i + 5000])
        report.add("events", count)
        report.add("ceiling_per_s", await ceiling(settings, raw_in, raw_out, count))
        report.line(f"raw consume + re-publish {report.figures['ceiling_per_s']:>10,.0f}/s")
        report.add("passthrough_agent_per_s", await agent(settings, topo, log, count))
        report.line(
            f"pass-through agent       {report.figures['passthrough_agent_per_s']:>10,.0f}/s"
        )
    finally:
        for stream in (raw_in, raw_out, *(s for t in topo.all for s in t.streams)):
            await log.delete_stream(stream)
        await log.close()
    f = report.figures
    report.add("ratio_agent_vs_ceiling", f["passthrough_agent_per_s"] / f["ceiling_per_s"])
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().events))
