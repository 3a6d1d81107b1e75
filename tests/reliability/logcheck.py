"""Reading a deployment's streams back: which records are poison, who should have
dead-lettered them, what the dead-letter stream holds, and whether the views caught up."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from events import AnyEvent, DecodeError, decode
from streams.log import EventLog, Position, Record, read_until_tail
from streams.runtime.app import App
from streams.runtime.deadletter import DeadLetter
from streams.topics import Topology

#: (agent, stream, offset)
Letter = tuple[str, str, int]


async def read_stream(log: EventLog, stream: str) -> list[Record]:
    out: list[Record] = []
    async for records in read_until_tail(log, stream, Position.first()):
        out.extend(records)
    return out


@dataclass
class StreamView:
    """One stream read back: its poison records and its events, by offset."""

    stream: str
    poison: dict[int, bytes] = field(default_factory=dict)
    events: dict[int, AnyEvent] = field(default_factory=dict)

    @classmethod
    def of(cls, stream: str, records: Iterable[Record]) -> StreamView:
        view = cls(stream)
        for r in records:
            try:
                view.events[r.offset] = decode(r.data)
            except DecodeError:
                view.poison[r.offset] = r.data
        return view

    def poison_bytes(self) -> Counter[bytes]:
        return Counter(self.poison.values())

    def last_event(self, types: frozenset[str] | None = None) -> int:
        """The offset of the last event (of ``types``), -1 if none."""
        found = [o for o, e in self.events.items() if types is None or e.type in types]
        return max(found, default=-1)


async def read_views(log: EventLog, streams: Sequence[str]) -> dict[str, StreamView]:
    return {s: StreamView.of(s, await read_stream(log, s)) for s in streams}


def readers(app: App, agents: Iterable[str]) -> dict[str, set[str]]:
    """The agents (of those running) that read each stream."""
    out: dict[str, set[str]] = {}
    for name in agents:
        spec = app.agents[name]
        for partition in range(spec.partitions):
            for stream in spec.input_streams(partition):
                out.setdefault(stream, set()).add(name)
    return out


def expected_letters(
    views: dict[str, StreamView], read_by: dict[str, set[str]]
) -> dict[Letter, bytes]:
    """Every poison record, once per agent that reads its stream."""
    return {
        (agent, stream, offset): data
        for stream, view in views.items()
        for offset, data in view.poison.items()
        for agent in read_by.get(stream, ())
    }


@dataclass
class DeadLetters:
    letters: list[DeadLetter]
    unreadable: int  # records of the dead-letter stream that are not dead letters

    @property
    def keys(self) -> list[Letter]:
        return [(d.agent, d.stream, d.offset) for d in self.letters]


async def dead_letters(log: EventLog, topology: Topology) -> DeadLetters:
    letters: list[DeadLetter] = []
    unreadable = 0
    for r in await read_stream(log, topology.deadletter.stream(0)):
        try:
            letters.append(DeadLetter.decode(r.data))
        except ValueError:
            unreadable += 1
    return DeadLetters(letters, unreadable)
