"""Where every stream ends and where every agent is: ``quotaflow streams status``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from streams.log import StreamNotFound
from streams.runtime.agent import Ack, AgentSpec
from streams.runtime.app import App


@dataclass(frozen=True)
class StreamRow:
    stream: str
    tail: int


@dataclass(frozen=True)
class AgentRow:
    agent: str
    stream: str
    position: int | None  # last processed offset, None if unknown
    lag: int | None  # offsets between the tail and the position (an upper bound on records)


async def agent_positions(app: App, spec: AgentSpec, partition: int) -> dict[str, int | None]:
    streams = spec.input_streams(partition)
    match spec.ack:
        case Ack.EXTERNAL:
            assert spec.positions is not None
            stored = await spec.positions(partition)
            return {s: (v if (v := stored.get(s, -1)) >= 0 else None) for s in streams}
        case Ack.CHECKPOINT:
            return {s: await app.offsets.load(f"{app.name}.{spec.name}", s) for s in streams}
        case Ack.REPLAY:
            # the last input that produced a stored output, from the publishers' sequences
            out: dict[str, int | None] = {}
            for s in streams:
                best: int | None = None
                for topic in app.topology.all:
                    if topic.partitions == app.topology.partitions:
                        target = topic.stream(partition)
                        seq = await app.log.last_sequence(
                            target, f"{app.name}.{spec.name}:{s}>{target}"
                        )
                        if seq:
                            best = max(best or -1, (seq >> 16) - 1)
                out[s] = best
            return out
    raise AssertionError(spec.ack)


async def status(app: App) -> tuple[list[StreamRow], list[AgentRow]]:
    streams = [s for topic in app.topology.all for s in topic.streams]
    try:
        found = await asyncio.gather(*(app.log.tail(s) for s in streams))
    except StreamNotFound as exc:
        raise StreamNotFound(f"{exc} does not exist: run `quotaflow streams create`") from None
    tails = dict(zip(streams, found, strict=True))
    agents: list[AgentRow] = []
    for name, spec in sorted(app.agents.items()):
        for partition in range(spec.partitions):
            for stream, pos in (await agent_positions(app, spec, partition)).items():
                lag = (
                    None
                    if pos is None and tails[stream]
                    else tails[stream] - (pos if pos is not None else -1) - 1
                )
                agents.append(AgentRow(name, stream, pos, lag))
    return [StreamRow(s, tails[s]) for s in streams], agents
