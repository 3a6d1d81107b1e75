"""Tokens reserved, settled and released per tenant, as Prometheus counters.

:func:`token_deltas` is pure: what one decision event means for the counters. It conserves
tokens: every reservation ends as ``settled + released`` (a settlement returns
``reserved - actual`` as released with reason ``unused``; a release or an expiry returns all
of it), so ``reserved = settled + released`` once no reservation is open.

:func:`observe_decisions` applies a batch of decisions to the counters, counts each request's
decision, and observes the decision latency (wall clock now minus the decision's
``occurred_at``, which the quota agent stamps with its cause's event time).

Call it where each decision is seen once per process life, *after* its effect is durable:
the quota-view agent after ``view.apply(...)`` returns is such a place (it resumes from the
positions stored in Redis). The quota agent itself is not: it replays its whole partition at
every start (``Ack.REPLAY``), which would count history again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from prometheus_client import Counter, Histogram

from events import (
    Event,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TokensReserved,
)
from quotaflow.observability.config import ObservabilitySettings

TokenKind = Literal["reserved", "settled", "released"]
OTHER_TENANTS = "_other"

TOKENS_RESERVED = Counter(
    "quotaflow_tokens_reserved", "Tokens reserved for admitted requests", ["tenant"]
)
TOKENS_SETTLED = Counter(
    "quotaflow_tokens_settled", "Tokens charged when a reservation is settled", ["tenant"]
)
TOKENS_RELEASED = Counter(
    "quotaflow_tokens_released",
    "Reserved tokens given back: unused (settled below the reservation), released, expired",
    ["tenant", "reason"],
)
REQUESTS_DECIDED = Counter(
    "quotaflow_requests_decided",
    "Requests decided by the quota agent: reserved, or rejected with a reason",
    ["tenant", "decision", "reason"],
)
DECISION_LATENCY = Histogram(
    "quotaflow_decision_latency_seconds",
    "Wall-clock seconds from a request's event time to its decision being observed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True, slots=True)
class TokenDelta:
    tenant: str
    kind: TokenKind
    tokens: int
    reason: str = ""  # for "released": unused, released or expired


def token_deltas(event: Event) -> list[TokenDelta]:
    """What a decision event adds to the token counters (nothing for any other event)."""
    tenant = event.tenant_id
    if isinstance(event, TokensReserved):
        return [TokenDelta(tenant, "reserved", event.tokens)]
    if isinstance(event, ReservationSettled):
        out = [TokenDelta(tenant, "settled", event.actual)]
        if event.returned > 0:
            out.append(TokenDelta(tenant, "released", event.returned, "unused"))
        return out
    if isinstance(event, ReservationReleased):
        return [TokenDelta(tenant, "released", event.reserved, "released")]
    if isinstance(event, ReservationExpired):
        return [TokenDelta(tenant, "released", event.reserved, "expired")]
    return []


class TenantLabels:
    """Bounds the tenant label's cardinality: the first ``limit`` tenants seen keep their name,
    later ones are counted as ``_other``."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._seen:
            return tenant
        if len(self._seen) < self.limit:
            self._seen.add(tenant)
            return tenant
        return OTHER_TENANTS


_labels: TenantLabels | None = None


def limit_tenants(limit: int) -> None:
    """How many distinct tenant labels this process exports from now on (by default
    ``QUOTAFLOW_METRICS_MAX_TENANTS``, read at the first decision)."""
    global _labels
    _labels = TenantLabels(limit)


def _tenant(tenant: str) -> str:
    if _labels is None:
        limit_tenants(ObservabilitySettings().metrics_max_tenants)
    assert _labels is not None
    return _labels(tenant)


def observe_decision(event: Event, *, now: datetime | None = None) -> None:
    """Count one decision event (any other event is ignored)."""
    for delta in token_deltas(event):
        tenant = _tenant(delta.tenant)
        if delta.kind == "reserved":
            TOKENS_RESERVED.labels(tenant).inc(delta.tokens)
        elif delta.kind == "settled":
            TOKENS_SETTLED.labels(tenant).inc(delta.tokens)
        else:
            TOKENS_RELEASED.labels(tenant, delta.reason).inc(delta.tokens)
    if isinstance(event, TokensReserved | RequestRejected):
        decision, reason = (
            ("reserved", "") if isinstance(event, TokensReserved) else ("rejected", event.reason)
        )
        REQUESTS_DECIDED.labels(_tenant(event.tenant_id), decision, reason).inc()
        seconds = ((now or datetime.now(UTC)) - event.occurred_at).total_seconds()
        DECISION_LATENCY.observe(max(seconds, 0.0))


def observe_decisions(events: Iterable[Event], *, now: datetime | None = None) -> None:
    """Count a batch of decision events, with one clock reading for the batch."""
    at = now or datetime.now(UTC)
    for event in events:
        observe_decision(event, now=at)
