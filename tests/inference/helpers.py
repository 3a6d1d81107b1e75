"""Reservations to feed the inference agent, a fake model, and reading the agent's results."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from events import AnyEvent, InferenceCompleted, InferenceFailed, TokensReserved, derive_id
from events.model import ChatMessage, RequestSpec
from quotaflow.triton.protocol import Completion
from streams.agents.inference_client import Answer, CallError
from streams.log import EventLog
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from streams.topics import Topology
from tests.runtime.helpers import read_all

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
Result = InferenceCompleted | InferenceFailed


def reservation(
    i: int,
    *,
    model: str = "echo",
    prompt: str | None = None,
    messages: list[ChatMessage] | None = None,
    max_tokens: int = 8,
    priority: int = 0,
    tenants: int = 5,
) -> TokensReserved:
    request_id = uuid.UUID(int=i + 1)
    if messages is None and prompt is None:
        prompt = f"prompt {i}"
    return TokensReserved(
        tenant_id=f"tenant-{i % tenants}",
        request_id=request_id,
        tokens=100 + max_tokens,
        expires_at=T0 + timedelta(minutes=5),
        spec=RequestSpec(
            model=model, prompt=prompt, messages=messages, max_tokens=max_tokens, priority=priority
        ),
        occurred_at=T0,
        causation_id=derive_id(request_id, "request"),
        correlation_id=request_id,
        headers={"traceparent": f"00-{request_id.hex}-00f067aa0ba902b7-01"},
    )


async def publish(app: App, events: Sequence[TokensReserved]) -> None:
    await app.topic(app.topology.quota).send_many(events)


async def results(log: EventLog, topo: Topology) -> list[Result]:
    out: list[AnyEvent] = await read_all(log, topo.requests.streams)
    return [e for e in out if isinstance(e, InferenceCompleted | InferenceFailed)]


def per_request(found: Sequence[Result]) -> Counter[uuid.UUID]:
    return Counter(e.request_id for e in found)


class FakeModel:
    """A ModelClient that answers like ``echo`` (3 prompt tokens, ``min(max_tokens, 4)``
    completion tokens), after ``delay_s``; ``errors[request_id]`` are raised first, in turn;
    a model named ``hang`` never answers."""

    def __init__(
        self, *, delay_s: float = 0.0, errors: dict[str, list[CallError]] | None = None
    ) -> None:
        self.delay_s = delay_s
        self.errors = errors or {}
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def generate(self, spec: RequestSpec, *, request_id: str, timeout_s: float) -> Answer:
        self.calls.append(request_id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if spec.model == "hang":
                await asyncio.sleep(3600)
            pending = self.errors.get(request_id)
            if pending:
                raise pending.pop(0)
            n = min(spec.max_tokens, 4)
            return Answer(Completion(" the" * n, 3, n), model_version="7")
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


async def result_count(log: EventLog, topo: Topology) -> int:
    """Results so far (nothing but the agent writes to ``requests`` in these tests)."""
    return sum([await log.tail(s) for s in topo.requests.streams])


async def run_until_results(app: App, count: int, timeout: float = 60) -> list[Result]:
    """Run the inference agent (every partition) until ``count`` results are in the log."""
    stop = asyncio.Event()
    runner = AgentRunner(app, ["inference"], StaticOwnership(), interval=0.05)
    task = asyncio.create_task(runner.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while await result_count(app.log, app.topology) < count:
            assert time.monotonic() < deadline, "results did not come in time"
            assert not task.done(), task
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    return await results(app.log, app.topology)
