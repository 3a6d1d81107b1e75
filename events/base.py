"""The envelope every event shares, and how event ids are made."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Namespace of derived event ids. Never change it: stored ids depend on it.
_DERIVED_NS = uuid.UUID("5b0c1f3e-6a4e-4c1b-9a55-2f7f3f6f0a11")
_DERIVED_NS_BYTES = _DERIVED_NS.bytes
_VERSION_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_VERSION_5 = (5 << 76) | (0x8000 << 48)


def new_id() -> uuid.UUID:
    """A fresh random event id, for facts that start a causal chain (a request, an admin act)."""
    return uuid.uuid4()


def derive_id(cause: uuid.UUID, label: str) -> uuid.UUID:
    """A deterministic id for an event derived from ``cause``.

    An agent that re-processes its input after a crash derives the same id again, so a
    re-emitted event is recognisably the same event on any log (RabbitMQ drops it by
    publishing id; a Kafka consumer drops it by event id).
    """
    # uuid.uuid5(_DERIVED_NS, f"{cause}:{label}"), without UUID.__init__'s argument checks
    digest = hashlib.sha1(_DERIVED_NS_BYTES + f"{cause}:{label}".encode()).digest()
    value = (int.from_bytes(digest[:16], "big") & _VERSION_MASK) | _VERSION_5
    out = object.__new__(uuid.UUID)
    object.__setattr__(out, "int", value)
    object.__setattr__(out, "is_safe", uuid.SafeUUID.unknown)
    return out


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
