"""Expected billing figures computed directly from events, independently of the projection.

Rule under test: a settlement is charged at the latest price of its model whose PriceSet
occurred at or before the settlement (the later PriceSet in the catalog wins a tie); per
invoice line (model × price) prompt and completion amounts are
``round_half_up(tokens × price_per_1k / 1000, 0.01)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from events import Event, PriceSet, ReservationSettled
from projections.billing import TenantTotals

Tokens = tuple[int, int, int]  # requests, prompt, completion


@dataclass(frozen=True)
class Line:
    model: str
    price_from: datetime | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    amount: Decimal


def settlements(events: Iterable[Event]) -> list[ReservationSettled]:
    seen: dict[object, ReservationSettled] = {}
    for event in events:
        if isinstance(event, ReservationSettled):
            seen.setdefault(event.event_id, event)
    return list(seen.values())


def day_of(event: Event) -> date:
    return event.occurred_at.astimezone(UTC).date()


def _add(total: dict[object, Tokens], key: object, s: ReservationSettled) -> None:
    n, p, c = total.get(key, (0, 0, 0))
    total[key] = (n + 1, p + s.prompt_tokens, c + s.completion_tokens)


def usage_by(
    events: Iterable[Event], tenant: str, start: date, end: date, by: str
) -> dict[object, Tokens]:
    total: dict[object, Tokens] = {}
    for s in settlements(events):
        if s.tenant_id == tenant and start <= day_of(s) < end:
            _add(total, day_of(s) if by == "day" else s.model, s)
    return total


def tenant_totals(events: Iterable[Event]) -> dict[str, Tokens]:
    total: dict[object, Tokens] = {}
    for s in settlements(events):
        _add(total, s.tenant_id, s)
    return {str(k): v for k, v in total.items()}


def flat(found: Mapping[str, TenantTotals]) -> dict[str, Tokens]:
    """What :func:`projections.billing.totals` returned, in the shape of :func:`tenant_totals`."""
    return {t: (v.requests, v.prompt_tokens, v.completion_tokens) for t, v in found.items()}


def price_book(catalog: Sequence[Event]) -> dict[str, dict[datetime, PriceSet]]:
    """Prices per model by effective time, in catalog order (a later tie wins)."""
    book: dict[str, dict[datetime, PriceSet]] = defaultdict(dict)
    for event in catalog:
        if isinstance(event, PriceSet):
            book[event.model][event.occurred_at] = event
    return book


def cents(tokens: int, per_1k: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 80
        return (tokens * per_1k / 1000).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def invoice(
    events: Sequence[Event], catalog: Sequence[Event], tenant: str, period: date
) -> list[Line]:
    book = price_book(catalog)
    groups: dict[tuple[str, datetime | None], Tokens] = {}
    prices: dict[tuple[str, datetime | None], PriceSet | None] = {}
    for s in settlements(events):
        if s.tenant_id != tenant or day_of(s).replace(day=1) != period:
            continue
        in_force = [at for at in book.get(s.model, {}) if at <= s.occurred_at]
        price = book[s.model][max(in_force)] if in_force else None
        key = (s.model, None if price is None else price.occurred_at)
        prices[key] = price
        n, p, c = groups.get(key, (0, 0, 0))
        groups[key] = (n + 1, p + s.prompt_tokens, c + s.completion_tokens)
    lines = []
    for key in sorted(groups, key=lambda k: (k[0], k[1] is not None, k[1] or datetime.min)):
        n, p, c = groups[key]
        price = prices[key]
        amount = (
            Decimal("0.00")
            if price is None
            else cents(p, price.prompt_per_1k) + cents(c, price.completion_per_1k)
        )
        lines.append(Line(key[0], key[1], n, p, c, amount))
    return lines
