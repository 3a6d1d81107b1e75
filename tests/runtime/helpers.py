"""Building blocks for runtime tests: sample events, running an agent for a while."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from events import AnyEvent, InferenceRequested, decode, encode
from events.model import RequestSpec
from streams.log import EventLog, Position, read_until_tail
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner


def requests(count: int, tenants: int = 5, start: int = 0) -> list[InferenceRequested]:
    return [
        InferenceRequested(
            tenant_id=f"tenant-{i % tenants}",
            request_id=uuid.UUID(int=i + 1),
            spec=RequestSpec(model="echo", prompt=f"prompt {i}", max_tokens=8),
            estimated_prompt_tokens=4,
        )
        for i in range(start, start + count)
    ]


async def publish(log: EventLog, app: App, events: list[InferenceRequested]) -> None:
    topic = app.topology.requests
    by_stream: dict[str, list[bytes]] = {}
    for e in events:
        by_stream.setdefault(topic.stream_for(e.tenant_id), []).append(encode(e))
    for stream, payloads in by_stream.items():
        await log.append(stream, payloads)


async def read_all(log: EventLog, streams: list[str]) -> list[AnyEvent]:
    out: list[AnyEvent] = []
    for stream in streams:
        async for records in read_until_tail(log, stream, Position.first()):
            out.extend(decode(r.data) for r in records)
    return out


async def run_until(
    app: App, agents: list[str], done: Callable[[], bool] | None = None, timeout: float = 20
) -> None:
    """Run agents (owning every partition) until ``done()`` or the timeout, then stop."""
    stop = asyncio.Event()
    runner = AgentRunner(app, agents, StaticOwnership(), interval=0.05)
    task = asyncio.create_task(runner.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline:
            if done is not None and done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
