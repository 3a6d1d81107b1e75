"""The quota agent's decisions: ``decide(state, event) -> list[Event]``. Pure: no clock, no I/O.

For each input of one ``requests`` partition, in log order, the agent runs::

    outs = decide(state, event)
    state = evolve(state, event)
    for out in outs:
        state = evolve(state, out)

and publishes ``outs`` to the ``quota`` partition. :func:`replay` does exactly that.

Semantics (see the tests in ``tests/quota`` for each):

* *now* is the partition's event time after ``event``: the largest ``occurred_at`` so far.
  Every decision is stamped ``occurred_at = now`` (the cause's own ``occurred_at`` unless the
  cause's clock lags an earlier event), ``causation_id`` = the cause, ``correlation_id`` =
  the request id, ``event_id = derive_id(cause, label)``: a replay decides the same, byte
  for byte.
* Expiry first: every open reservation (any tenant) with ``expires_at <= now`` expires
  (ReservationExpired, oldest first) before the event itself is decided, and the event is
  decided with the capacity that frees.
* A request is checked against budget, tpm, rpm, concurrency in that order and rejected
  with the first limit it would break; ``retry_after_s`` is when that limit admits it given
  what is known now (budget: start of the next period; tpm/rpm: when enough admissions
  leave the window; concurrency: when the first open reservation would expire), ``None``
  when the request can never fit (more tokens than the budget or the tpm).
* Rate windows slide over event time: at ``now`` they hold the admissions of the tenant
  with ``now - 60 s < admitted_at <= now`` (:mod:`streams.quota.timeline`). rpm counts those
  admissions whatever became of them; tpm sums what each counts: its reserved tokens while
  open, the charged tokens once settled, 0 once released or expired (the window counts
  what the budget counts). A request is admitted iff ``window + requested <= limit``.
* Budget: ``used + reserved + requested <= token_budget`` over the current UTC month or
  day. A reservation counts against the period it was made in; settling it after the
  boundary charges that (old) period and leaves the new one alone. Both day and month
  counters are kept, so changing ``period`` counts exactly what the new period holds.
  Lowering a budget below what is used leaves ``remaining`` at 0; nothing is revoked.
* Over-usage: a completion reporting more tokens than reserved is charged the reserved
  amount (prompt first, then completion, clamped): the settled prompt/completion tokens are
  what was charged, the InferenceCompleted (``causation_id``) keeps what was reported, so
  an audit sees both.
* Expiry: a reservation is open while ``now < expires_at``; a completion at or after that
  finds it expired (its tokens went back) and is not charged: no decision.
* Idempotence: a request id is remembered while its reservation is open and for
  ``dedup_horizon_s`` (default 600 s, 1 s granularity) of event time after it was decided or
  closed; a second InferenceRequested with a remembered id gets no decision. Results for a
  request with no open reservation (unknown, settled, released, expired) get none either,
  whenever they come. A policy event is applied once per event id. Memory of recent ids:
  one dict entry per request decided or closed in the horizon.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from events import (
    Event,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    QuotaPolicy,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TokensReserved,
    derive_id,
)
from events.model import RejectReason
from streams.quota.state import QuotaState, Reservation, TenantState, evolve
from streams.quota.timeline import (
    DAY_US,
    WINDOW_US,
    from_us,
    period_bounds,
    seconds,
    to_us,
)

Due = list[tuple[str, Reservation]]
_NOTHING_DUE: Due = []
_NONE_STALE = (0, 0)
_NOTHING: list[Reservation] = []


def decide(state: QuotaState, event: Event) -> list[Event]:
    """The decisions ``event`` leads to, given ``state`` (which is not modified)."""
    t = to_us(event.occurred_at)
    now = t if t > state.now else state.now
    stamp = event.occurred_at if t == now else from_us(now)
    heap = state.expiry
    if heap and heap[0][0] <= now:
        due = state.due(now)
        outs: list[Event] = [_expired(event, stamp, tenant_id, res) for tenant_id, res in due]
    else:
        due, outs = _NOTHING_DUE, []
    handler = _DECIDERS.get(type(event))
    if handler is not None:
        out = handler(state, event, now, stamp, due)
        if out is not None:
            outs.append(out)
    return outs


def _expired(cause: Event, stamp: datetime, tenant_id: str, res: Reservation) -> Event:
    return ReservationExpired(
        event_id=derive_id(cause.event_id, f"expired:{res.request_id}"),
        occurred_at=stamp,
        tenant_id=tenant_id,
        causation_id=cause.event_id,
        correlation_id=res.request_id,
        request_id=res.request_id,
        reserved=res.tokens,
    )


def replay(
    events: Iterable[Event], state: QuotaState | None = None
) -> tuple[QuotaState, list[Event]]:
    """Run the agent over ``events``: the final state and every decision, in order."""
    state = QuotaState() if state is None else state
    decisions: list[Event] = []
    for event in events:
        outs = decide(state, event)
        evolve(state, event)
        for out in outs:
            evolve(state, out)
        decisions.extend(outs)
    return state, decisions


# --- requests ----------------------------------------------------------------------------


def _request(state: QuotaState, event: Any, now: int, stamp: datetime, due: Due) -> Event | None:
    e: InferenceRequested = event
    rid = e.request_id
    key = rid.int
    tenant = state.tenants.get(e.tenant_id)
    if state.remembers(key, now) or (tenant is not None and key in tenant.open):
        return None
    requested = e.estimated_prompt_tokens + e.spec.max_tokens
    if tenant is None or tenant.policy is None:
        return _reject(e, stamp, "unknown_tenant", requested, None, "no quota policy")
    policy = tenant.policy
    freed = [res for tenant_id, res in due if tenant_id == e.tenant_id] if due else _NOTHING
    head = _window_start(tenant, now)
    verdict = (
        _budget(tenant, policy, now, requested, freed)
        or _tpm(tenant, policy, now, requested, freed, head)
        or _rpm(tenant, policy, now, head)
        or _concurrency(tenant, policy, now, freed)
    )
    if verdict is not None:
        reason, retry_after, detail = verdict
        return _reject(e, stamp, reason, requested, retry_after, detail)
    return TokensReserved(
        event_id=derive_id(e.event_id, "reserved"),
        occurred_at=stamp,
        tenant_id=e.tenant_id,
        causation_id=e.event_id,
        correlation_id=rid,
        request_id=rid,
        tokens=requested,
        expires_at=stamp + timedelta(seconds=policy.reservation_ttl_s),
        spec=e.spec,
    )


Verdict = tuple[RejectReason, float | None, str] | None


def _budget(
    tenant: TenantState, policy: QuotaPolicy, now: int, requested: int, freed: list[Reservation]
) -> Verdict:
    if policy.period == "month":
        if now < tenant.month_end:  # the tenant's counters are this month's
            start, end = tenant.month, tenant.month_end
            used, reserved = tenant.used_month, tenant.reserved_month
        else:
            (start, end), used, reserved = period_bounds("month", now), 0, 0
        if freed:
            reserved -= sum(res.tokens for res in freed if res.month == start)
    else:
        if now < tenant.day + DAY_US:
            start, end = tenant.day, tenant.day + DAY_US
            used, reserved = tenant.used_day, tenant.reserved_day
        else:
            (start, end), used, reserved = period_bounds("day", now), 0, 0
        if freed:
            reserved -= sum(res.tokens for res in freed if res.day == start)
    budget = policy.token_budget
    if used + reserved + requested <= budget:
        return None
    retry = seconds(end - now) if requested <= budget else None
    detail = f"used {used} + reserved {reserved} + requested {requested} > {budget}"
    return "budget", retry, detail


def _window_start(tenant: TenantState, now: int) -> tuple[int, int]:
    """(entries at the window's head that no longer count at ``now``, their tokens)."""
    window = tenant.window
    cutoff = now - WINDOW_US
    if not window or window[0][0] > cutoff:
        return _NONE_STALE
    stale = stale_tokens = 0
    for t, tokens in window:
        if t > cutoff:
            break
        stale += 1
        stale_tokens += tokens
    return stale, stale_tokens


def _tpm(
    tenant: TenantState,
    policy: QuotaPolicy,
    now: int,
    requested: int,
    freed: list[Reservation],
    window_start: tuple[int, int],
) -> Verdict:
    limit = policy.tokens_per_minute
    if limit is None:
        return None
    stale, stale_tokens = window_start
    cutoff = now - WINDOW_US
    expired = [res.entry for res in freed if res.entry[0] > cutoff] if freed else []
    counted = tenant.window_tokens - stale_tokens
    for entry in expired:
        counted -= entry[1]
    if counted + requested <= limit:
        return None
    detail = f"{counted} tokens in the last 60 s + requested {requested} > {limit}"
    if requested > limit:
        return "tpm", None, detail
    need, leaving = counted + requested - limit, 0
    for entry in itertools.islice(tenant.window, stale, None):
        if not any(entry is x for x in expired):
            leaving += entry[1]
        if leaving >= need:
            return "tpm", seconds(entry[0] + WINDOW_US - now), detail
    raise AssertionError("the window cannot hold more than it counts")  # pragma: no cover


def _rpm(
    tenant: TenantState, policy: QuotaPolicy, now: int, window_start: tuple[int, int]
) -> Verdict:
    limit = policy.requests_per_minute
    if limit is None:
        return None
    stale = window_start[0]
    count = len(tenant.window) - stale
    if count < limit:
        return None
    # count + 1 - limit admissions must leave the window: the last of them is the one at
    # index stale + count - limit
    leaves = tenant.window[stale + count - limit][0] + WINDOW_US
    return "rpm", seconds(leaves - now), f"{count} requests in the last 60 s, limit {limit}"


def _concurrency(
    tenant: TenantState, policy: QuotaPolicy, now: int, freed: list[Reservation]
) -> Verdict:
    limit = policy.max_concurrent
    if limit is None:
        return None
    open_now = len(tenant.open) - len(freed)
    if open_now < limit:
        return None
    first = min(res.expires_us for res in tenant.open.values() if res.expires_us > now)
    return "concurrency", seconds(first - now), f"{open_now} open reservations, limit {limit}"


def _reject(
    e: InferenceRequested,
    stamp: datetime,
    reason: RejectReason,
    requested: int,
    retry_after: float | None,
    detail: str,
) -> RequestRejected:
    return RequestRejected(
        event_id=derive_id(e.event_id, "rejected"),
        occurred_at=stamp,
        tenant_id=e.tenant_id,
        causation_id=e.event_id,
        correlation_id=e.request_id,
        request_id=e.request_id,
        reason=reason,
        detail=detail,
        requested_tokens=requested,
        retry_after_s=retry_after,
    )


# --- results -----------------------------------------------------------------------------


def _open(state: QuotaState, tenant_id: str, request_id: uuid.UUID, now: int) -> Reservation | None:
    """The reservation a result settles: open, and not expiring at ``now``."""
    tenant = state.tenants.get(tenant_id)
    res = tenant.open.get(request_id.int) if tenant is not None else None
    return res if res is not None and res.expires_us > now else None


def _completed(state: QuotaState, event: Any, now: int, stamp: datetime, due: Due) -> Event | None:
    e: InferenceCompleted = event
    res = _open(state, e.tenant_id, e.request_id, now)
    if res is None:
        return None
    prompt = min(e.prompt_tokens, res.tokens)
    completion = min(e.completion_tokens, res.tokens - prompt)
    return ReservationSettled(
        event_id=derive_id(e.event_id, "settled"),
        occurred_at=stamp,
        tenant_id=e.tenant_id,
        causation_id=e.event_id,
        correlation_id=e.request_id,
        request_id=e.request_id,
        model=e.model,
        reserved=res.tokens,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def _failed(state: QuotaState, event: Any, now: int, stamp: datetime, due: Due) -> Event | None:
    e: InferenceFailed = event
    res = _open(state, e.tenant_id, e.request_id, now)
    if res is None:
        return None
    return ReservationReleased(
        event_id=derive_id(e.event_id, "released"),
        occurred_at=stamp,
        tenant_id=e.tenant_id,
        causation_id=e.event_id,
        correlation_id=e.request_id,
        request_id=e.request_id,
        reserved=res.tokens,
        reason=e.reason,
    )


_DECIDERS: dict[type[Event], Callable[[QuotaState, Any, int, datetime, Due], Event | None]] = {
    InferenceRequested: _request,
    InferenceCompleted: _completed,
    InferenceFailed: _failed,
}
