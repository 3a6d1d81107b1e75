"""The quota agent's state for one partition, and how events evolve it.

``evolve(state, event) -> state`` is deterministic and reads no clock: event time is the
partition's *watermark*, the largest ``occurred_at`` seen so far, so time never runs
backwards even when producers' clocks disagree by a little.

For speed ``evolve`` updates ``state`` in place and returns it: the agent owns its state and
folds the log into it (``state = evolve(state, e)``); the windows of a busy tenant hold
thousands of entries and copying them per event would cost more than the decision. Use
:meth:`QuotaState.copy` to keep an earlier state. :func:`streams.quota.decide.decide` only
reads the state.

What the state holds, per tenant: the policy; used and reserved tokens of the current UTC
day and month (both are kept, so a change of ``period`` needs no re-count); open
reservations; the rate window (one entry per admission of the last 60 s); a rejection count.
Per partition: the expiry heap and the request ids decided recently (duplicate detection,
bounded by ``dedup_horizon_s`` of event time).
"""

from __future__ import annotations

import copy
import uuid
from bisect import insort
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

from events import (
    Event,
    QuotaPolicy,
    QuotaPolicySet,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
)
from streams.quota.timeline import (
    DAY_US,
    SECOND_US,
    WINDOW_US,
    day_start,
    month_bounds,
    month_start,
    to_us,
)

#: How long (event time) a decided request id is remembered after it was last seen.
DEFAULT_DEDUP_HORIZON_S = 600
_NEVER = -(2**62)


@dataclass(slots=True)
class Reservation:
    request_id: uuid.UUID
    tokens: int
    at_us: int
    expires_us: int
    month: int  # start (µs) of the month it counts against
    day: int  # start (µs) of the day it counts against
    seq: int  # order of admission in the partition (ties in the expiry heap)
    entry: list[int]  # its rate-window entry [admitted at µs, tokens counted]


@dataclass(slots=True)
class TenantState:
    policy: QuotaPolicy | None = None
    policy_events: set[uuid.UUID] = field(default_factory=set)
    month: int = _NEVER
    month_end: int = _NEVER
    used_month: int = 0
    reserved_month: int = 0
    day: int = _NEVER
    used_day: int = 0
    reserved_day: int = 0
    #: open reservations by request id (its ``.int``: hashing a UUID costs a Python call)
    open: dict[int, Reservation] = field(default_factory=dict)
    open_tokens: int = 0
    #: admissions of the last 60 s, oldest first: [admitted at µs, tokens counted]
    window: deque[list[int]] = field(default_factory=deque)
    window_tokens: int = 0
    rejected: int = 0

    def roll(self, now: int) -> None:
        """Start new day/month counters once ``now`` is past the current period."""
        if now >= self.day + DAY_US:
            self.day = day_start(now)
            self.used_day = self.reserved_day = 0
            if now >= self.month_end:
                self.month, self.month_end = month_bounds(now)
                self.used_month = self.reserved_month = 0

    def prune(self, now: int) -> None:
        """Drop window entries that no longer count at ``now``."""
        window, cutoff = self.window, now - WINDOW_US
        while window and window[0][0] <= cutoff:
            self.window_tokens -= window.popleft()[1]


@dataclass(slots=True)
class QuotaState:
    """Everything the quota agent knows about the tenants of one partition."""

    dedup_horizon_s: int = DEFAULT_DEDUP_HORIZON_S
    now: int = _NEVER
    tenants: dict[str, TenantState] = field(default_factory=dict)
    #: (expires at µs, seq, tenant, request id); the top is always an open reservation
    expiry: list[tuple[int, int, str, int]] = field(default_factory=list)
    seq: int = 0
    #: request id -> second (event time) it was last decided or closed
    recent: dict[int, int] = field(default_factory=dict)
    recent_log: deque[tuple[int, list[int]]] = field(default_factory=deque)

    def copy(self) -> QuotaState:
        return copy.deepcopy(self)

    def remembers(self, request_id: int, now: int) -> bool:
        """Whether ``request_id`` (its ``.int``) was decided or closed within the horizon."""
        second = self.recent.get(request_id)
        oldest = (now - self.dedup_horizon_s * SECOND_US) // SECOND_US
        return second is not None and second >= oldest

    def is_open(self, tenant_id: str, request_id: int, seq: int) -> bool:
        tenant = self.tenants.get(tenant_id)
        res = tenant.open.get(request_id) if tenant is not None else None
        return res is not None and res.seq == seq

    def due(self, now: int) -> list[tuple[str, Reservation]]:
        """Open reservations whose TTL has run out at ``now``, in order of expiry."""
        heap = self.expiry
        if not heap or heap[0][0] > now:
            return []
        found = sorted(x for x in heap if x[0] <= now and self.is_open(x[2], x[3], x[1]))
        return [(tenant_id, self.tenants[tenant_id].open[rid]) for _, _, tenant_id, rid in found]


# --- evolve ------------------------------------------------------------------------------


def evolve(state: QuotaState, event: Event) -> QuotaState:
    """Apply one event (an input of the agent or one of its decisions) to ``state``."""
    t = to_us(event.occurred_at)
    if t > state.now:
        state.now = t
        _forget(state)
    handler = _EVOLVERS.get(type(event))
    if handler is not None:
        handler(state, event, t)
    return state


def fold(events: Iterable[Event], state: QuotaState | None = None) -> QuotaState:
    """Evolve over a log that already holds the decisions (no decide)."""
    state = QuotaState() if state is None else state
    for event in events:
        evolve(state, event)
    return state


def _remember(state: QuotaState, request_id: int) -> None:
    second = state.now // SECOND_US
    state.recent[request_id] = second
    log = state.recent_log
    if log and log[-1][0] == second:
        log[-1][1].append(request_id)
    else:
        log.append((second, [request_id]))


def _forget(state: QuotaState) -> None:
    log, recent = state.recent_log, state.recent
    oldest = (state.now - state.dedup_horizon_s * SECOND_US) // SECOND_US
    while log and log[0][0] < oldest:
        second, ids = log.popleft()
        for rid in ids:
            if recent.get(rid) == second:
                del recent[rid]


def _tenant(state: QuotaState, tenant_id: str) -> TenantState:
    tenant = state.tenants.get(tenant_id)
    if tenant is None:
        tenant = state.tenants[tenant_id] = TenantState()
    return tenant


def _policy(state: QuotaState, event: Any, t: int) -> None:
    tenant = _tenant(state, event.tenant_id)
    if event.event_id not in tenant.policy_events:
        tenant.policy_events.add(event.event_id)
        tenant.policy = event.policy


def _reserved(state: QuotaState, event: Any, t: int) -> None:
    e: TokensReserved = event
    now = state.now
    tenant = _tenant(state, e.tenant_id)
    rid = e.request_id.int
    if rid in tenant.open or state.remembers(rid, now):
        return  # a duplicated decision (only in logs not written by decide)
    _remember(state, rid)
    tenant.roll(now)
    if tenant.day <= t:  # admitted today (always, when written by decide)
        month, day = tenant.month, tenant.day
    else:
        month, day = month_start(t), day_start(t)
    if month == tenant.month:
        tenant.reserved_month += e.tokens
    if day == tenant.day:
        tenant.reserved_day += e.tokens
    entry = [t, e.tokens]
    tenant.prune(now)
    if t > now - WINDOW_US:
        if tenant.window and tenant.window[-1][0] > t:
            insort(tenant.window, entry)  # only for logs not written by decide
        else:
            tenant.window.append(entry)
        tenant.window_tokens += e.tokens
    res = Reservation(e.request_id, e.tokens, t, to_us(e.expires_at), month, day, state.seq, entry)
    tenant.open[rid] = res
    tenant.open_tokens += e.tokens
    heappush(state.expiry, (res.expires_us, res.seq, e.tenant_id, rid))
    state.seq += 1


def _rejected(state: QuotaState, event: Any, t: int) -> None:
    e: RequestRejected = event
    _remember(state, e.request_id.int)
    tenant = state.tenants.get(e.tenant_id)
    if tenant is not None and e.reason != "unknown_tenant":
        tenant.rejected += 1


def _settled(state: QuotaState, event: Any, t: int) -> None:
    e: ReservationSettled = event
    _close(state, e.tenant_id, e.request_id.int, e.prompt_tokens + e.completion_tokens)


def _released(state: QuotaState, event: Any, t: int) -> None:
    _close(state, event.tenant_id, event.request_id.int, None)


def _close(state: QuotaState, tenant_id: str, request_id: int, actual: int | None) -> None:
    """Close a reservation: settled with ``actual`` tokens, or released/expired (None)."""
    _remember(state, request_id)
    tenant = state.tenants.get(tenant_id)
    res = tenant.open.pop(request_id, None) if tenant is not None else None
    if tenant is None or res is None:
        return
    charged = 0 if actual is None else min(actual, res.tokens)
    now = state.now
    tenant.roll(now)
    if res.month == tenant.month:
        tenant.used_month += charged
        tenant.reserved_month -= res.tokens
    if res.day == tenant.day:
        tenant.used_day += charged
        tenant.reserved_day -= res.tokens
    tenant.open_tokens -= res.tokens
    tenant.prune(now)
    entry = res.entry
    if entry[0] > now - WINDOW_US:
        tenant.window_tokens += charged - entry[1]
    entry[1] = charged
    heap = state.expiry
    while heap and not state.is_open(heap[0][2], heap[0][3], heap[0][1]):
        heappop(heap)


_EVOLVERS: dict[type[Event], Callable[[QuotaState, Any, int], None]] = {
    TenantRegistered: _policy,
    QuotaPolicySet: _policy,
    TokensReserved: _reserved,
    RequestRejected: _rejected,
    ReservationSettled: _settled,
    ReservationReleased: _released,
    ReservationExpired: _released,
}
