"""The log's facts, folded per request and per tenant with plain Python.

This is what the audit recomputes the views from: small tuples that remember where each fact
is (stream, offset), so that the expected content of a view can be computed as of any
positions the view has stored (:mod:`projections.audit.expected`). It shares no code with the
projections (no billing SQL, no Lua, no row builders).

Every fact is taken once: an event id seen a second time is recorded as a duplicate and not
folded again, except a duplicated rejection, which the Redis view counts again (its script
has nothing to recognise it by) and which is therefore kept for the quota view's figures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from events import (
    Event,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    PriceSet,
    QuotaPolicy,
    QuotaPolicySet,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
)
from projections.audit.model import MAX_REFS, EventRef


class Requested(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    model: str
    estimated_prompt: int
    max_tokens: int


class Reserved(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    tokens: int
    expires_at: datetime
    model: str


class Rejected(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    reason: str
    requested_tokens: int


class Completed(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    model: str
    prompt: int
    completion: int


class Failed(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    model: str


class Settled(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    model: str
    reserved: int
    prompt: int
    completion: int


class Closed(NamedTuple):
    """A reservation released (inference failed) or expired: nothing charged."""

    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    kind: str  # "released" | "expired"
    reserved: int


class Policy(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    type: str  # TenantRegistered | QuotaPolicySet
    policy: QuotaPolicy


class Price(NamedTuple):
    stream: str
    offset: int
    at: datetime
    event_id: uuid.UUID
    model: str
    prompt_per_1k: Decimal
    completion_per_1k: Decimal
    currency: str


Stage = Requested | Reserved | Rejected | Completed | Failed | Settled | Closed | Policy | Price

_TYPE_OF: dict[type, str] = {
    Requested: "InferenceRequested",
    Reserved: "TokensReserved",
    Rejected: "RequestRejected",
    Completed: "InferenceCompleted",
    Failed: "InferenceFailed",
    Settled: "ReservationSettled",
    Price: "PriceSet",
}


def ref(stage: Stage) -> EventRef:
    if isinstance(stage, Closed):
        kind = "ReservationReleased" if stage.kind == "released" else "ReservationExpired"
    elif isinstance(stage, Policy):
        kind = stage.type
    else:
        kind = _TYPE_OF[type(stage)]
    return EventRef(stage.stream, stage.offset, kind, stage.event_id)


def involved(stages: Sequence[Stage]) -> tuple[tuple[EventRef, ...], int]:
    """The refs of the first :data:`MAX_REFS` facts, and how many more there are."""
    return tuple(ref(s) for s in stages[:MAX_REFS]), max(0, len(stages) - MAX_REFS)


@dataclass(slots=True)
class Life:
    """Everything the log says about one request."""

    request_id: uuid.UUID
    tenant: str
    requested: list[Requested] = field(default_factory=list)
    reserved: list[Reserved] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    completed: list[Completed] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    settled: list[Settled] = field(default_factory=list)
    closed: list[Closed] = field(default_factory=list)

    def stages(self) -> list[Stage]:
        return [
            *self.requested,
            *self.reserved,
            *self.rejected,
            *self.completed,
            *self.failed,
            *self.settled,
            *self.closed,
        ]

    def refs(self) -> list[EventRef]:
        return [ref(s) for s in self.stages()]


@dataclass(slots=True)
class TenantFacts:
    policies: list[Policy] = field(default_factory=list)
    rejections: list[Rejected] = field(default_factory=list)  # duplicates included


@dataclass(frozen=True, slots=True)
class Duplicate:
    first: EventRef
    again: EventRef
    tenant: str
    at: datetime


@dataclass
class Facts:
    lives: dict[uuid.UUID, Life] = field(default_factory=dict)
    tenants: dict[str, TenantFacts] = field(default_factory=dict)
    prices: list[Price] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    seen: dict[uuid.UUID, tuple[str, int]] = field(default_factory=dict)
    events: int = 0
    redelivered: int = 0  # duplicates of a kind that may be appended twice (invariants.py)

    def add(self, stream: str, offset: int, event: Event) -> bool:
        """Fold one event; ``False`` if it is a duplicate (its id was seen before)."""
        self.events += 1
        eid = event.event_id
        first = self.seen.get(eid)
        if first is not None:
            kind = str(getattr(event, "type", type(event).__name__))
            self.duplicates.append(
                Duplicate(
                    EventRef(first[0], first[1], kind, eid),
                    EventRef(stream, offset, kind, eid),
                    event.tenant_id,
                    event.occurred_at,
                )
            )
            if isinstance(event, RequestRejected) and event.reason != "unknown_tenant":
                self.tenant(event.tenant_id).rejections.append(
                    Rejected(stream, offset, event.occurred_at, eid, event.reason, 0)
                )
            return False
        self.seen[eid] = (stream, offset)
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, stream, offset, event)
        return True

    def life(self, request_id: uuid.UUID, tenant: str) -> Life:
        life = self.lives.get(request_id)
        if life is None:
            life = self.lives[request_id] = Life(request_id, tenant)
        return life

    def tenant(self, tenant: str) -> TenantFacts:
        facts = self.tenants.get(tenant)
        if facts is None:
            facts = self.tenants[tenant] = TenantFacts()
        return facts


def _requested(f: Facts, stream: str, offset: int, e: InferenceRequested) -> None:
    f.life(e.request_id, e.tenant_id).requested.append(
        Requested(
            stream,
            offset,
            e.occurred_at,
            e.event_id,
            e.spec.model,
            e.estimated_prompt_tokens,
            e.spec.max_tokens,
        )
    )


def _reserved(f: Facts, stream: str, offset: int, e: TokensReserved) -> None:
    f.life(e.request_id, e.tenant_id).reserved.append(
        Reserved(stream, offset, e.occurred_at, e.event_id, e.tokens, e.expires_at, e.spec.model)
    )


def _rejected(f: Facts, stream: str, offset: int, e: RequestRejected) -> None:
    stage = Rejected(stream, offset, e.occurred_at, e.event_id, e.reason, e.requested_tokens)
    f.life(e.request_id, e.tenant_id).rejected.append(stage)
    if e.reason != "unknown_tenant":
        f.tenant(e.tenant_id).rejections.append(stage)


def _completed(f: Facts, stream: str, offset: int, e: InferenceCompleted) -> None:
    f.life(e.request_id, e.tenant_id).completed.append(
        Completed(
            stream, offset, e.occurred_at, e.event_id, e.model, e.prompt_tokens, e.completion_tokens
        )
    )


def _failed(f: Facts, stream: str, offset: int, e: InferenceFailed) -> None:
    f.life(e.request_id, e.tenant_id).failed.append(
        Failed(stream, offset, e.occurred_at, e.event_id, e.model)
    )


def _settled(f: Facts, stream: str, offset: int, e: ReservationSettled) -> None:
    f.life(e.request_id, e.tenant_id).settled.append(
        Settled(
            stream,
            offset,
            e.occurred_at,
            e.event_id,
            e.model,
            e.reserved,
            e.prompt_tokens,
            e.completion_tokens,
        )
    )


def _released(f: Facts, stream: str, offset: int, e: ReservationReleased) -> None:
    f.life(e.request_id, e.tenant_id).closed.append(
        Closed(stream, offset, e.occurred_at, e.event_id, "released", e.reserved)
    )


def _expired(f: Facts, stream: str, offset: int, e: ReservationExpired) -> None:
    f.life(e.request_id, e.tenant_id).closed.append(
        Closed(stream, offset, e.occurred_at, e.event_id, "expired", e.reserved)
    )


def _policy(f: Facts, stream: str, offset: int, e: TenantRegistered | QuotaPolicySet) -> None:
    f.tenant(e.tenant_id).policies.append(
        Policy(stream, offset, e.occurred_at, e.event_id, e.type, e.policy)
    )


def _price(f: Facts, stream: str, offset: int, e: PriceSet) -> None:
    f.prices.append(
        Price(
            stream,
            offset,
            e.occurred_at,
            e.event_id,
            e.model,
            e.prompt_per_1k,
            e.completion_per_1k,
            e.currency,
        )
    )


_HANDLERS: dict[type[Event], Callable[[Facts, str, int, Any], None]] = {
    InferenceRequested: _requested,
    TokensReserved: _reserved,
    RequestRejected: _rejected,
    InferenceCompleted: _completed,
    InferenceFailed: _failed,
    ReservationSettled: _settled,
    ReservationReleased: _released,
    ReservationExpired: _expired,
    TenantRegistered: _policy,
    QuotaPolicySet: _policy,
    PriceSet: _price,
}
