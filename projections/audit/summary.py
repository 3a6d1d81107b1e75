"""Per-tenant figures for the report: usage, reservations, invoices, usage over time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from projections.audit.expected import (
    BillingExpected,
    billing_expected,
    month_of,
    tenant_figures,
)
from projections.audit.facts import Facts, Life

#: (bucket length, label format), picked by the span the log covers
_BUCKETS = (
    (timedelta(hours=3), timedelta(minutes=1), "%Y-%m-%d %H:%M"),
    (timedelta(days=3), timedelta(hours=1), "%Y-%m-%d %H:00"),
    (timedelta.max, timedelta(days=1), "%Y-%m-%d"),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_of(span: timedelta) -> tuple[timedelta, str]:
    for limit, size, label in _BUCKETS:
        if span <= limit:
            return size, label
    raise AssertionError("unreachable")  # pragma: no cover


def _floor(at: datetime, size: timedelta) -> datetime:
    return _EPOCH + ((at - _EPOCH) // size) * size


def tenant_summaries(
    facts: Facts,
    lives: Mapping[str, list[Life]],
    tenant: str | None = None,
    period: date | None = None,
    billing: BillingExpected | None = None,
) -> dict[str, dict[str, Any]]:
    """Everything the report shows per tenant, over the whole log (``period``: that month);
    ``billing``: :func:`billing_expected` of the whole log, if it is at hand."""
    if billing is None:
        billing = billing_expected(facts, None, tenant, period)
    settled = [
        s
        for tid, ls in lives.items()
        if tenant is None or tid == tenant
        for life in ls
        for s in life.settled[:1]
        if period is None or month_of(s.at.astimezone(UTC).date()) == period
    ]
    times = [s.at for s in settled]
    size, label = bucket_of(max(times) - min(times)) if times else (timedelta(days=1), "%Y-%m-%d")
    names = sorted(
        t for t in {*lives, *facts.tenants} if (tenant is None or t == tenant) and t != "system"
    )
    out: dict[str, dict[str, Any]] = {}
    for tid in names:
        figures = tenant_figures(lives.get(tid, []))
        usage: dict[str, dict[str, int]] = {}
        for (t, p, _), totals in billing.monthly.items():
            if t == tid:
                u = usage.setdefault(f"{p:%Y-%m}", {"requests": 0, "prompt": 0, "completion": 0})
                u["requests"] += totals.requests
                u["prompt"] += totals.prompt
                u["completion"] += totals.completion
        invoices = {
            f"{p:%Y-%m}": {
                "total": str(inv.total),
                "currency": sorted({ln.currency for ln in inv.lines.values() if ln.currency}),
                "lines": [
                    {
                        "model": ln.model,
                        "price_from": None if ln.price_from is None else ln.price_from.isoformat(),
                        "requests": ln.requests,
                        "prompt_tokens": ln.prompt,
                        "completion_tokens": ln.completion,
                        "amount": str(ln.amount),
                    }
                    for ln in inv.lines.values()
                ],
            }
            for (t, p), inv in sorted(billing.invoices.items())
            if t == tid
        }
        series: dict[datetime, list[int]] = {}
        for life in lives.get(tid, []):
            for s in life.settled[:1]:
                if period is None or month_of(s.at.astimezone(UTC).date()) == period:
                    b = series.setdefault(_floor(s.at, size), [0, 0])
                    b[0] += s.prompt
                    b[1] += s.completion
        out[tid] = {
            "reservations": figures,
            "conservation": {
                "reserved": figures["reserved"],
                "charged": figures["charged"],
                "returned": figures["returned"],
                "released": figures["released_tokens"],
                "expired": figures["expired_tokens"],
                "open": figures["open_tokens"],
            },
            "usage": usage,
            "invoices": invoices,
            "series": {
                "bucket": label,
                "points": [[f"{at:{label}}", p, c] for at, (p, c) in sorted(series.items())],
            },
        }
    return out
