"""The Faust-compatible path: quotaflow's agent functions as faust-streaming agents.

    faust_app = faust.App("quotaflow", broker="kafka://127.0.0.1:9092", web_enabled=False)
    app = App("quotaflow", KafkaEventLog("127.0.0.1:9092"), topology=topology)
    register_passthrough(app, app.topic(topology.requests), app.topic(topology.quota))
    register_on_faust(faust_app, app)   # then: faust -A module:faust_app worker

:func:`register_on_faust` registers each of the app's agents once per partition as
``@faust_app.agent(topic)``, ``topic`` being the partition's input streams (the same Kafka
topics the Kafka backend uses, one partition each). The *same* function runs: it gets a
:class:`streams.runtime.Stream` fed by faust's stream, so ``async for``, ``take``,
``accepts`` filtering, dead-lettering of undecodable records and ``topic.emit(event,
cause=...)`` behave as under quotaflow's runtime.

What faust does: the consumer group (group id = the faust app id), partition assignment and
rebalancing across workers, and committing input offsets. What the adapter does: it turns
off faust's automatic acks and acks an input event only once everything the agent emitted
for it is confirmed by the broker, so faust commits only inputs whose outputs are durable.
Inputs are at least once, as faust promises; outputs are sent through the quotaflow
:class:`~streams.log.EventLog` with the runtime's named publishers and cause-derived
publishing ids, so on the Kafka backend an output re-emitted after a crash is recognised
from the log's record headers and not stored again (see :mod:`streams.kafka_log`), and it
carries the same deterministic event id anyway.

Limits, on purpose: only ``Ack.CHECKPOINT`` agents (stateless log-to-log) are adapted. A
``REPLAY`` agent (the quota agent) rebuilds its state by replaying its input from the first
offset, which faust's committed offsets do not do; an ``EXTERNAL`` agent (the projections)
resumes where its own store says. Run those with ``quotaflow run``. Clock ticks (``tick_s``)
are not emitted, and an exception in the agent is faust's to handle (its supervisor restarts
the agent), not dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import faust

from streams.log import Record
from streams.runtime.agent import Ack, AgentSpec
from streams.runtime.app import App
from streams.runtime.stream import Delivery, Stream
from streams.runtime.worker import CURRENT, PartitionWorker


def register_on_faust(
    faust_app: faust.App, app: App, agents: Iterable[str] | None = None
) -> dict[str, Any]:
    """Register ``app``'s agents (all by default) on ``faust_app``; the faust agents by name
    (``<agent>-<partition>``)."""
    out: dict[str, Any] = {}
    running = _Running(app)
    for name in agents if agents is not None else list(app.agents):
        spec = app.agents[name]
        if spec.ack is not Ack.CHECKPOINT:
            raise ValueError(
                f"agent {name} uses Ack.{spec.ack.name}: only Ack.CHECKPOINT agents run on faust"
            )
        for partition in range(spec.partitions):
            topic = faust_app.topic(*spec.input_streams(partition), value_serializer="raw")
            agent_name = f"{name}-{partition}"
            out[agent_name] = faust_app.agent(topic, name=agent_name)(
                _faust_agent(running, spec, partition)
            )
    return out


class _Running:
    """Closes the quotaflow app (its log's connections) when its last faust agent stops."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.count = 0

    async def run(self, worker: FaustWorker) -> None:
        self.count += 1
        try:
            await worker.run()
        finally:
            self.count -= 1
            if self.count == 0:
                await self.app.close()  # the log reconnects if an agent is started again


def _faust_agent(running: _Running, spec: AgentSpec, partition: int) -> Any:
    async def run(stream: Any) -> None:
        await running.run(FaustWorker(running.app, spec, partition, stream.noack()))

    run.__name__ = run.__qualname__ = spec.name.replace("-", "_")
    return run


class FaustWorker(PartitionWorker):
    """A partition worker whose input is a faust stream (see the module docstring)."""

    def __init__(self, app: App, spec: AgentSpec, partition: int, stream: Any) -> None:
        super().__init__(app, spec, partition)
        self._faust = stream
        self._events: AsyncIterator[Any] = stream.events().__aiter__()
        self._next: asyncio.Future[Any] | None = None
        self._unacked: deque[tuple[str, int, Any]] = deque()

    async def run(self) -> None:
        self._reset_run_state()
        self._skip |= await self._dead_lettered()
        stream = self._stream = Stream(self, self.spec.name)
        token = CURRENT.set(self)
        try:
            await self.spec.fn(stream)
        finally:
            CURRENT.reset(token)
            if self._next is not None:
                self._next.cancel()
                with contextlib.suppress(BaseException):
                    await self._next

    async def next_chunk(self, timeout: float | None) -> list[Delivery] | None:
        while True:
            if self._next is None:
                self._next = asyncio.ensure_future(self._events.__anext__())
            done, _ = await asyncio.wait({self._next}, timeout=timeout)
            if not done:
                return None
            event, self._next = self._next.result(), None  # StopAsyncIteration ends the agent
            message = event.message
            topic, offset = str(message.topic), int(message.offset)
            self._unacked.append((topic, offset, event))
            record = Record(topic, offset, int(message.timestamp * 1000), bytes(event.value))
            deliveries = await self._decode(topic, [record])
            if deliveries:
                return deliveries
            if timeout is not None:
                return None

    async def flush(self, buffered: Sequence[Delivery] = (), final: bool = False) -> None:
        """Send what the agent emitted, wait for the broker's confirmation, then ack (for
        faust to commit) every input event handed to the agent so far."""
        pending, self._pending = self._pending, defaultdict(list)
        futures = [
            await self._submit(pub, stream, items) for (pub, stream), items in pending.items()
        ]
        for future in futures:
            if future is not None:
                await future
        self._per_cause.clear()
        self._causes = {id(d.event): d for d in buffered}
        keep = {(d.stream, d.offset) for d in buffered}
        while self._unacked and (self._unacked[0][0], self._unacked[0][1]) not in keep:
            await self._faust.ack(self._unacked.popleft()[2])
