"""The read model of a tenant's quota, one definition for the pure state and the views.

:func:`make_tenant_quota` computes a :class:`TenantQuota` from counters and window entries;
:func:`tenant_quota` feeds it from a :class:`~streams.quota.state.QuotaState`, the Redis view
(:mod:`projections.quota_view`) from its hashes, so both agree value for value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from events import QuotaPolicy
from streams.quota.state import QuotaState
from streams.quota.timeline import Period, from_us, in_window, period_bounds, to_us


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """A tenant's quota at ``as_of``: what the views show and the audit compares."""

    tenant_id: str
    as_of: datetime
    period: Period
    period_start: datetime
    period_end: datetime
    budget: int
    used: int  # tokens charged to reservations made in this period
    reserved: int  # tokens of open reservations made in this period
    remaining: int  # budget - used - reserved, at least 0
    tokens_per_minute: int | None
    requests_per_minute: int | None
    max_concurrent: int | None
    window_tokens: int  # tokens counted in (as_of - 60 s, as_of]
    window_requests: int  # admissions in (as_of - 60 s, as_of]
    open_reservations: int  # of any period
    open_tokens: int
    rejected: int  # rejections (except unknown_tenant), all time


@dataclass(frozen=True, slots=True)
class PeriodCounters:
    """Used/reserved tokens of the latest day and month a tenant has counters for."""

    month: int
    used_month: int
    reserved_month: int
    day: int
    used_day: int
    reserved_day: int


def make_tenant_quota(
    tenant_id: str,
    policy: QuotaPolicy,
    at_us: int,
    counters: PeriodCounters,
    window: Iterable[tuple[int, int]],
    open_reservations: int,
    open_tokens: int,
    rejected: int,
) -> TenantQuota:
    """The read model at ``at_us`` (one definition for the pure state and the views).

    ``window`` yields (admitted at µs, tokens counted) of at least every admission of the
    last 60 s before ``at_us``; counters of a period that ``at_us`` is past read as zero.
    """
    start, end = period_bounds(policy.period, at_us)
    if policy.period == "month":
        current = counters.month == start
        used = counters.used_month if current else 0
        reserved = counters.reserved_month if current else 0
    else:
        current = counters.day == start
        used = counters.used_day if current else 0
        reserved = counters.reserved_day if current else 0
    w_tokens = w_requests = 0
    for t, tokens in window:
        if in_window(t, at_us):
            w_tokens += tokens
            w_requests += 1
    return TenantQuota(
        tenant_id=tenant_id,
        as_of=from_us(at_us),
        period=policy.period,
        period_start=from_us(start),
        period_end=from_us(end),
        budget=policy.token_budget,
        used=used,
        reserved=reserved,
        remaining=max(0, policy.token_budget - used - reserved),
        tokens_per_minute=policy.tokens_per_minute,
        requests_per_minute=policy.requests_per_minute,
        max_concurrent=policy.max_concurrent,
        window_tokens=w_tokens,
        window_requests=w_requests,
        open_reservations=open_reservations,
        open_tokens=open_tokens,
        rejected=rejected,
    )


def tenant_quota(
    state: QuotaState, tenant_id: str, at: datetime | None = None
) -> TenantQuota | None:
    """The read model of ``tenant_id`` at ``at`` (default: the partition's event time).

    ``at`` must not be earlier than the state's event time. ``None`` for a tenant without
    a policy.
    """
    tenant = state.tenants.get(tenant_id)
    if tenant is None or tenant.policy is None:
        return None
    at_us = state.now if at is None else to_us(at)
    if at_us < state.now:
        raise ValueError("the state has moved past the requested time")
    counters = PeriodCounters(
        tenant.month,
        tenant.used_month,
        tenant.reserved_month,
        tenant.day,
        tenant.used_day,
        tenant.reserved_day,
    )
    return make_tenant_quota(
        tenant_id,
        tenant.policy,
        at_us,
        counters,
        ((t, tokens) for t, tokens in tenant.window),
        len(tenant.open),
        tenant.open_tokens,
        tenant.rejected,
    )
