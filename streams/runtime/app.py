"""The App: topics, agents, and how events get into the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from events import encode
from events.base import Event
from streams.log import EventLog, OffsetStore
from streams.runtime.agent import Ack, AgentFn, AgentSpec, PositionsFn
from streams.runtime.stream import Delivery
from streams.runtime.worker import CURRENT, PartitionWorker
from streams.topics import Topic, Topology


class AppTopic:
    """A topic bound to an app: ``send`` from an agent emits exactly once; elsewhere it appends."""

    def __init__(self, app: App, topic: Topic) -> None:
        self.app = app
        self.topic = topic

    @property
    def name(self) -> str:
        return self.topic.name

    async def send(self, event: Event, *, cause: Event | Delivery | None = None) -> None:
        worker = CURRENT.get()
        if worker is not None:
            if cause is None:
                raise ValueError("inside an agent, send(event, cause=input_event)")
            worker.emit(self.topic, event, cause)
            return
        await self.send_many([event])

    def emit(self, event: Event, *, cause: Event | Delivery) -> None:
        """The synchronous form of ``send`` inside an agent (no await needed)."""
        worker = CURRENT.get()
        if worker is None:
            raise RuntimeError("emit() is for agents; use await send() elsewhere")
        worker.emit(self.topic, event, cause)

    async def send_many(self, events: Iterable[Event]) -> None:
        """Append events outside any agent, grouped per partition (at least once)."""
        by_stream: dict[str, list[bytes]] = {}
        for event in events:
            stream = (
                self.topic.stream_for(event.tenant_id)
                if self.topic.partitions > 1
                else self.topic.stream(0)
            )
            by_stream.setdefault(stream, []).append(encode(event))
        for stream, payloads in by_stream.items():
            await self.app.log.append(stream, payloads)


class App:
    def __init__(
        self,
        name: str,
        log: EventLog,
        *,
        offsets: OffsetStore | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self.offsets: OffsetStore = offsets if offsets is not None else log  # type: ignore[assignment]
        self.topology = topology or Topology(partitions=1)
        self.agents: dict[str, AgentSpec] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register a resource to close when the app closes (pools, clients)."""
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()
        self._closers.clear()
        await self.log.close()

    def topic(self, topic: Topic) -> AppTopic:
        return AppTopic(self, topic)

    def agent(
        self,
        *topics: AppTopic | Topic,
        accepts: Sequence[type[Event]] | None = None,
        ack: Ack = Ack.CHECKPOINT,
        positions: PositionsFn | None = None,
        batch: int = 1000,
        name: str | None = None,
        tick_s: float | None = None,
    ) -> Callable[[AgentFn], AgentFn]:
        """Register ``fn(stream)`` as an agent over ``topics`` (one instance per partition)."""
        inputs = tuple(t.topic if isinstance(t, AppTopic) else t for t in topics)
        accepted = (
            None
            if accepts is None
            else frozenset(str(cls.model_fields["type"].default) for cls in accepts)
        )

        def register(fn: AgentFn) -> AgentFn:
            agent_name = name or fn.__name__.replace("_", "-")
            if agent_name in self.agents:
                raise ValueError(f"agent {agent_name} is registered already")
            self.agents[agent_name] = AgentSpec(
                agent_name, fn, inputs, accepted, ack, positions, batch, tick_s
            )
            return fn

        return register

    async def create_streams(self, topics: Iterable[Topic] | None = None) -> None:
        """Declare every stream of the topology (idempotent)."""
        for topic in topics if topics is not None else self.topology.all:
            for stream in topic.streams:
                await self.log.create_stream(stream)

    def worker(self, agent: str, partition: int) -> PartitionWorker:
        return PartitionWorker(self, self.agents[agent], partition)
