"""Dead letters: input records an agent could not process, kept with the reason.

A dead letter names the agent, the stream and offset, the kind of failure (``decode``: the
bytes are not a current event; ``handler``: the agent raised a non-retryable error on it) and
carries the original bytes, so nothing is lost and an operator can replay it once fixed. A
letter must fit in one record (RabbitMQ's frame is 1 MiB, and base64 adds a third), so of a
record above :data:`MAX_DATA` bytes it keeps the first :data:`MAX_DATA` and says so in
``error``; the whole record stays in its stream at ``offset``.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from events import utcnow

#: The most bytes of the failed record a dead letter carries.
MAX_DATA = 512 * 1024


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    stream: str
    offset: int
    kind: Literal["decode", "handler"]
    error: str
    data_b64: str
    at: AwareDatetime

    @classmethod
    def of(
        cls,
        agent: str,
        stream: str,
        offset: int,
        kind: Literal["decode", "handler"],
        error: str,
        data: bytes,
        at: datetime | None = None,
    ) -> DeadLetter:
        error = error[:2000]
        if len(data) > MAX_DATA:
            error += f" [a record of {len(data)} bytes: the letter keeps the first {MAX_DATA}]"
            data = data[:MAX_DATA]
        return cls(
            agent=agent,
            stream=stream,
            offset=offset,
            kind=kind,
            error=error,
            data_b64=base64.b64encode(data).decode(),
            at=at or utcnow(),
        )

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.data_b64)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> DeadLetter:
        return cls.model_validate_json(data)
