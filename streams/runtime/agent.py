"""What an agent is: a function over a stream, its inputs, and how it acknowledges."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.topics import Topic

if TYPE_CHECKING:
    from streams.runtime.stream import Stream

AgentFn = Callable[["Stream"], Coroutine[Any, Any, None]]
#: For ``Ack.EXTERNAL``: the last applied offset per input stream of a partition (-1: none).
PositionsFn = Callable[[int], Awaitable[dict[str, int]]]


class Ack(enum.Enum):
    """How an agent's progress is made durable.

    ``CHECKPOINT``: a log-to-log agent without state. Outputs are confirmed by the broker,
    then the input offset is committed; after a crash the agent resumes after the committed
    offset and the re-sent outputs are dropped by publishing id.

    ``REPLAY``: a log-to-log agent with state (the quota agent). State is rebuilt at start by
    replaying the input partition from its first offset; outputs whose publishing id is
    already in the log are recognised and not sent again.

    ``EXTERNAL``: the agent writes its effect and its input positions in one atomic step
    (a PostgreSQL transaction, a Redis script) and tells the runtime where to resume.
    """

    CHECKPOINT = "checkpoint"
    REPLAY = "replay"
    EXTERNAL = "external"


@dataclass(frozen=True)
class AgentSpec:
    name: str
    fn: AgentFn
    inputs: tuple[Topic, ...]
    accepts: frozenset[str] | None
    ack: Ack
    positions: PositionsFn | None = None
    batch: int = 1000
    #: Append a ClockTicked to each owned input partition this often (event time for idle
    #: partitions, so that e.g. reservations expire without other traffic).
    tick_s: float | None = None

    def __post_init__(self) -> None:
        counts = {t.partitions for t in self.inputs}
        if len(counts) != 1:
            raise ValueError(f"agent {self.name}: inputs must have the same partition count")
        if self.ack is Ack.EXTERNAL and self.positions is None:
            raise ValueError(f"agent {self.name}: Ack.EXTERNAL needs a positions function")

    @property
    def partitions(self) -> int:
        return self.inputs[0].partitions

    def input_streams(self, partition: int) -> list[str]:
        return [t.stream(partition) for t in self.inputs]
