"""What the views must hold, recomputed from the facts with plain Python sums.

Each function takes the positions a view has stored (stream -> last applied offset; ``None``
for the whole log) and counts only the facts at or below them, so a view is compared with the
log exactly as far as it has read it.

The rules written out here are the views' documented contracts, implemented again from
scratch (no projection code): the billing view keeps the first event of each kind per request
and one ledger row per settlement event; an invoice line is one model at one price in force
(the latest PriceSet of the model at or before the settlement; the later one in the catalog
wins a tie), priced ``round_half_up(tokens × price / 1000, cents)`` for prompt and completion
separately. The quota view counts, for the period holding its time ``at``, the tokens charged
to the closed reservations made in that period (``used``), the tokens of the open ones
(``reserved``), and over the last 60 s before ``at`` the admissions and their tokens (a closed
one counts what it was charged).
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, NamedTuple

from projections.audit.facts import (
    Closed,
    Facts,
    Life,
    Price,
    Settled,
    Stage,
    ref,
)
from projections.audit.model import EventRef

Positions = Mapping[str, int] | None
WINDOW = timedelta(seconds=60)
CENT = Decimal("0.01")


def _everything(stage: Stage) -> bool:
    return True


def within(positions: Positions) -> Callable[[Stage], bool]:
    """Whether a fact is at or below the positions (``None``: the whole log)."""
    if positions is None:
        return _everything
    return lambda stage: stage.offset <= positions.get(stage.stream, -1)


def refs_of(stages: list[Any]) -> list[EventRef]:
    return [ref(s) for s in stages]


def month_of(day: date) -> date:
    return day.replace(day=1)


def cents(tokens: int, per_1k: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        return (Decimal(tokens) * per_1k / 1000).quantize(CENT, rounding=ROUND_HALF_UP)


# --- billing -----------------------------------------------------------------------------


@dataclass(slots=True)
class Totals:
    """Settled usage; ``stages`` are the settlements counted (the events involved)."""

    requests: int = 0
    prompt: int = 0
    completion: int = 0
    stages: list[Settled] = field(default_factory=list)

    def add(self, s: Settled) -> None:
        self.requests += 1
        self.prompt += s.prompt
        self.completion += s.completion
        self.stages.append(s)


class LedgerRow(NamedTuple):
    request_id: uuid.UUID
    tenant: str
    settled: Settled

    def values(self) -> tuple[Any, ...]:
        """In the order of the columns the audit reads from ``usage_ledger``."""
        s = self.settled
        return (self.request_id, self.tenant, s.model, s.reserved, s.prompt, s.completion, s.at)


@dataclass(slots=True)
class RequestRow:
    tenant: str
    models: set[str]
    status: str
    reserved_tokens: int | None
    prompt: int | None
    completion: int | None
    settled_prompt: int | None
    settled_completion: int | None
    life: Life
    keep: Callable[[Stage], bool]

    @property
    def stages(self) -> list[Stage]:
        """The facts the row is made of (computed when a discrepancy needs them)."""
        return [s for s in self.life.stages() if self.keep(s)]


@dataclass(slots=True)
class Line:
    model: str
    price_from: datetime | None
    currency: str | None
    requests: int = 0
    prompt: int = 0
    completion: int = 0
    amount: Decimal = Decimal("0.00")
    stages: list[Settled] = field(default_factory=list)


@dataclass
class Invoice:
    lines: dict[tuple[str, datetime | None], Line] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines.values()), Decimal("0.00"))

    @property
    def stages(self) -> list[Settled]:
        return [s for line in self.lines.values() for s in line.stages]


@dataclass
class BillingExpected:
    ledger: dict[uuid.UUID, LedgerRow] = field(default_factory=dict)
    daily: dict[tuple[str, date, str], Totals] = field(default_factory=dict)
    monthly: dict[tuple[str, date, str], Totals] = field(default_factory=dict)
    requests: dict[uuid.UUID, RequestRow] = field(default_factory=dict)
    invoices: dict[tuple[str, date], Invoice] = field(default_factory=dict)


def _first(stages: list[Any], keep: Callable[[Stage], bool]) -> Any:
    kept = [s for s in stages if keep(s)]
    return min(kept, key=lambda s: s.offset) if kept else None


def _earliest(stages: list[Any]) -> Any:
    return stages[0] if len(stages) == 1 else min(stages, key=lambda s: s.offset)


def _request_row(life: Life, keep: Callable[[Stage], bool]) -> RequestRow | None:
    """The request's row as the billing view keeps it: the first event of each kind wins."""
    lists: tuple[list[Any], ...] = (
        life.requested,
        life.reserved,
        life.rejected,
        life.completed,
        life.failed,
        life.settled,
        life.closed,
    )
    if keep is not _everything:
        lists = tuple([s for s in stages if keep(s)] for stages in lists)
    requested, reserved, rejected, completed, failed, settled, closed = lists
    if not (requested or reserved or rejected or completed or failed or settled or closed):
        return None
    kinds = {c.kind for c in closed} if closed else set()
    status = (
        "settled"
        if settled
        else "released"
        if "released" in kinds
        else "expired"
        if closed
        else "rejected"
        if rejected
        else "completed"
        if completed
        else "failed"
        if failed
        else "reserved"
        if reserved
        else "requested"
    )
    carriers = [(s.offset, s.tokens) for s in reserved]
    carriers += [(s.offset, s.reserved) for s in settled]
    carriers += [(s.offset, s.reserved) for s in closed]
    first_settled = _earliest(settled) if settled else None
    first_completed = _earliest(completed) if completed else None
    models: set[str] = set()
    for group in (requested, reserved, completed, failed, settled):
        if group:
            models.add(group[0].model)  # a correct log agrees; any first one may be the view's
    return RequestRow(
        tenant=life.tenant,
        models=models,
        status=status,
        reserved_tokens=min(carriers)[1] if carriers else None,
        prompt=None if first_completed is None else first_completed.prompt,
        completion=None if first_completed is None else first_completed.completion,
        settled_prompt=None if first_settled is None else first_settled.prompt,
        settled_completion=None if first_settled is None else first_settled.completion,
        life=life,
        keep=keep,
    )


class PriceBook:
    """Prices per model by effective time; a later PriceSet at the same instant wins."""

    def __init__(self, prices: list[Price], keep: Callable[[Stage], bool]) -> None:
        book: dict[str, dict[datetime, Price]] = {}
        for p in sorted((p for p in prices if keep(p)), key=lambda p: p.offset):
            book.setdefault(p.model, {})[p.at] = p
        self._times = {m: sorted(by_time) for m, by_time in book.items()}
        self._book = book

    def at(self, model: str, when: datetime) -> Price | None:
        times = self._times.get(model)
        if not times:
            return None
        i = bisect_right(times, when)
        return self._book[model][times[i - 1]] if i else None


def billing_expected(
    facts: Facts,
    positions: Positions = None,
    tenant: str | None = None,
    period: date | None = None,
) -> BillingExpected:
    keep = within(positions)
    out = BillingExpected()
    book = PriceBook(facts.prices, keep)
    for rid, life in facts.lives.items():
        if tenant is not None and life.tenant != tenant:
            continue
        row = _request_row(life, keep)
        if row is not None and (period is None or _first_month(row.stages) == period):
            out.requests[rid] = row
        for s in life.settled:
            if not keep(s) or s.event_id in out.ledger:
                continue
            day = s.at.astimezone(UTC).date()
            if period is not None and month_of(day) != period:
                continue
            out.ledger[s.event_id] = LedgerRow(rid, life.tenant, s)
            out.daily.setdefault((life.tenant, day, s.model), Totals()).add(s)
            out.monthly.setdefault((life.tenant, month_of(day), s.model), Totals()).add(s)
            price = book.at(s.model, s.at)
            key = (s.model, None if price is None else price.at)
            invoice = out.invoices.setdefault((life.tenant, month_of(day)), Invoice())
            line = invoice.lines.get(key)
            if line is None:
                currency = None if price is None else price.currency
                line = invoice.lines[key] = Line(s.model, key[1], currency)
            line.requests += 1
            line.prompt += s.prompt
            line.completion += s.completion
            line.stages.append(s)
    for (_, _), invoice in out.invoices.items():
        for (model, price_from), line in invoice.lines.items():
            if price_from is None:
                continue
            price = book.at(model, price_from)
            assert price is not None
            line.amount = cents(line.prompt, price.prompt_per_1k) + cents(
                line.completion, price.completion_per_1k
            )
    return out


def _first_month(stages: list[Stage]) -> date:
    return month_of(min(s.at for s in stages).astimezone(UTC).date())


# --- the quota view ----------------------------------------------------------------------


def period_bounds(period: str, at: datetime) -> tuple[datetime, datetime]:
    at = at.astimezone(UTC)
    if period == "day":
        start = datetime(at.year, at.month, at.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    end = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass
class QuotaExpected:
    """A tenant's row of the quota view: ``figures`` has the fields of
    :class:`streams.quota.TenantQuota` (``None`` when the view has no policy for it)."""

    at: datetime | None
    figures: dict[str, Any] | None
    stages: dict[str, list[Any]]  # the facts behind each group of fields (see FIELD_REFS)


def by_tenant(facts: Facts) -> dict[str, list[Life]]:
    out: dict[str, list[Life]] = {}
    for life in facts.lives.values():
        out.setdefault(life.tenant, []).append(life)
    return out


def quota_expected(
    facts: Facts, lives: list[Life], tenant: str, positions: Positions = None
) -> QuotaExpected | None:
    """The view's row of ``tenant``; ``None`` if the view should not know the tenant."""
    keep = within(positions)
    tf = facts.tenants.get(tenant)
    policies = [p for p in (tf.policies if tf else []) if keep(p)]
    rejections = [r for r in (tf.rejections if tf else []) if keep(r)]
    times = [p.at for p in policies]
    decided = [r.at for r in rejections]
    refs: dict[str, list[Any]] = {"policy": policies, "open": [], "rejected": rejections}
    reservations: list[tuple[Any, Any]] = []
    for life in lives:
        everything: list[Settled | Closed] = [*life.settled, *life.closed]
        closings = [c for c in everything if keep(c)]
        decided += [c.at for c in closings]
        r = _first(life.reserved, keep)
        if r is None:
            continue
        decided.append(r.at)
        after = [c for c in closings if c.offset > r.offset or c.stream != r.stream]
        reservations.append((r, min(after, key=lambda c: c.offset) if after else None))
    if not policies and not decided:
        return None
    if not policies:
        return QuotaExpected(None, None, refs)
    policy = max(policies, key=lambda p: p.offset).policy
    at = max(decided) if decided else max(times)
    start, end = period_bounds(policy.period, at)
    used = reserved = open_n = open_t = w_tokens = w_requests = 0
    refs["used"], refs["reserved"], refs["window"] = [], [], []
    for r, closing in reservations:
        charged = 0
        if isinstance(closing, Settled):
            charged = min(closing.prompt + closing.completion, r.tokens)
        in_period = start <= r.at < end
        if closing is None:
            open_n += 1
            open_t += r.tokens
            refs["open"].append(r)
            if in_period:
                reserved += r.tokens
                refs["reserved"].append(r)
        elif in_period:
            used += charged
            refs["used"].append(closing)
        if at - WINDOW < r.at <= at:
            w_requests += 1
            w_tokens += r.tokens if closing is None else charged
            refs["window"].append(r)
    figures = {
        "as_of": at,
        "period": policy.period,
        "period_start": start,
        "period_end": end,
        "budget": policy.token_budget,
        "used": used,
        "reserved": reserved,
        "remaining": max(0, policy.token_budget - used - reserved),
        "tokens_per_minute": policy.tokens_per_minute,
        "requests_per_minute": policy.requests_per_minute,
        "max_concurrent": policy.max_concurrent,
        "window_tokens": w_tokens,
        "window_requests": w_requests,
        "open_reservations": open_n,
        "open_tokens": open_t,
        "rejected": len(rejections),
    }
    return QuotaExpected(at, figures, refs)


FIELD_REFS = {
    "used": "used",
    "remaining": "used",
    "reserved": "reserved",
    "open_reservations": "open",
    "open_tokens": "open",
    "window_tokens": "window",
    "window_requests": "window",
    "rejected": "rejected",
    "budget": "policy",
    "period": "policy",
    "tokens_per_minute": "policy",
    "requests_per_minute": "policy",
    "max_concurrent": "policy",
}


# --- the report's per-tenant figures -------------------------------------------------------


def tenant_figures(lives: list[Life]) -> dict[str, int]:
    """Reservations and tokens of one tenant over the whole log."""
    f = dict.fromkeys(("made", "settled", "released", "expired", "open", "rejected"), 0) | {
        "reserved": 0,
        "charged": 0,
        "returned": 0,
        "released_tokens": 0,
        "expired_tokens": 0,
        "open_tokens": 0,
    }
    for life in lives:
        f["rejected"] += bool(life.rejected)
        if not life.reserved:
            continue
        r = life.reserved[0]
        f["made"] += 1
        f["reserved"] += r.tokens
        closings: list[Settled | Closed] = [*life.settled, *life.closed]
        closing = min(closings, key=lambda c: c.offset, default=None)
        if closing is None:
            f["open"] += 1
            f["open_tokens"] += r.tokens
        elif isinstance(closing, Closed):
            f[closing.kind] += 1
            f[f"{closing.kind}_tokens"] += closing.reserved
        else:
            f["settled"] += 1
            f["charged"] += closing.prompt + closing.completion
            f["returned"] += closing.reserved - closing.prompt - closing.completion
    return f
