"""The envelope every event shares, and how event ids are made."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Namespace of derived event ids. Never change it: stored ids depend on it.
_DERIVED_NS = uuid.UUID("5b0c1f3e-6a4e-4c1b-9a55-2f7f3f6f0a11")


def new_id() -> uuid.UUID:
    """A fresh random event id, for facts that start a causal chain (a request, an admin act)."""
    return uuid.uuid4()


def derive_id(cause: uuid.UUID, label: str) -> uuid.UUID:
    """A deterministic id for an event derived from ``cause``.

    An agent that re-processes its input after a crash derives the same id again, so a
    re-emitted event is recognisably the same event on any log (RabbitMQ drops it by
    publishing id; a Kafka consumer drops it by event id).
    """
    return uuid.uuid5(_DERIVED_NS, f"{cause}:{label}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope: what every fact carries besides its own payload.

    ``type`` and ``version`` are declared by each concrete event as ``Literal`` fields.
    ``headers`` carries cross-cutting context (W3C trace context) and never business data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID = Field(default_factory=new_id)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    tenant_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    causation_id: uuid.UUID | None = None
    correlation_id: uuid.UUID | None = None
    headers: dict[str, str] = Field(default_factory=dict)
