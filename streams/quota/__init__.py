"""Token quotas as pure functions of the log.

:func:`decide` and :func:`evolve` are the quota agent's whole logic; :func:`replay` runs
them over a partition's inputs, :func:`fold` evolves over a log that holds the decisions,
:func:`tenant_quota` reads a tenant's :class:`TenantQuota` (the views' read model).
"""

from streams.quota.decide import decide, replay
from streams.quota.readmodel import PeriodCounters, TenantQuota, make_tenant_quota, tenant_quota
from streams.quota.state import (
    DEFAULT_DEDUP_HORIZON_S,
    QuotaState,
    Reservation,
    TenantState,
    evolve,
    fold,
)
from streams.quota.timeline import WINDOW_S, WINDOW_US

__all__ = [
    "DEFAULT_DEDUP_HORIZON_S",
    "WINDOW_S",
    "WINDOW_US",
    "PeriodCounters",
    "QuotaState",
    "Reservation",
    "TenantQuota",
    "TenantState",
    "decide",
    "evolve",
    "fold",
    "make_tenant_quota",
    "replay",
    "tenant_quota",
]
