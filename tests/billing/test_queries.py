"""Usage and invoices equal the sums computed directly from the events, to the token and cent."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

import pytest
from psycopg import AsyncConnection

from projections.billing import apply, invoice, totals, usage

from . import reference
from .builder import LogBuilder

pytestmark = pytest.mark.services

TENANTS = ("acme", "globex", "initech")
MODELS = ("llama-8b", "smollm2", "qwen-7b")  # qwen-7b never gets a price
SOURCES: tuple[Literal["usage_period", "usage_daily", "usage_ledger"], ...] = (
    "usage_period",
    "usage_daily",
    "usage_ledger",
)


def _two_months() -> LogBuilder:
    """About ten weeks of traffic around month ends, with price changes on the way."""
    rng = random.Random(11)
    log = LogBuilder()
    log.price("llama-8b", "0.200", "0.600", at=log.now - timedelta(days=30))
    log.price("smollm2", "0.010", "0.020", at=log.now - timedelta(days=30))
    for week in range(10):
        log.traffic(rng, 60, TENANTS, MODELS, gap_s=10_000)
        model = MODELS[week % 2]
        cents = rng.randint(1, 99)
        log.price(model, f"0.{cents:03d}", f"0.{cents * 3:03d}")
    return log


@pytest.mark.parametrize("shuffled", [False, True], ids=["by-time", "random-interleaving"])
async def test_usage_invoices_and_totals_equal_the_events(
    conn: AsyncConnection[Any], schema: str, shuffled: bool
) -> None:
    log = _two_months()
    items = log.items(random.Random(5) if shuffled else None)
    for start in range(0, len(items), 97):
        await apply(conn, items[start : start + 97], schema)
    events = log.events()
    catalog = log.streams["t-catalog-0"]
    first, last = reference.day_of(events[0]), log.now.date() + timedelta(days=2)

    for tenant in TENANTS:
        for group_by in ("day", "model"):
            found = await usage(conn, tenant, first, last, group_by, schema=schema)
            key = "day" if group_by == "day" else "model"
            got = {
                getattr(r, key): (r.requests, r.prompt_tokens, r.completion_tokens)
                for r in found.rows
            }
            assert got == reference.usage_by(events, tenant, first, last, group_by)
            assert found.total_tokens == sum(p + c for _, p, c in got.values())
        # a window that cuts days off both ends
        window = (first + timedelta(days=9), first + timedelta(days=40))
        found = await usage(conn, tenant, *window, "model", schema=schema)
        assert {
            r.model: (r.requests, r.prompt_tokens, r.completion_tokens) for r in found.rows
        } == (reference.usage_by(events, tenant, *window, "model"))

        periods = sorted({reference.day_of(e).replace(day=1) for e in events})
        assert len(periods) >= 3
        for period in periods:
            bill = await invoice(conn, tenant, period, schema=schema)
            expected = reference.invoice(events, catalog, tenant, period)
            assert [
                (x.model, x.price_from, x.requests, x.prompt_tokens, x.completion_tokens, x.amount)
                for x in bill.lines
            ] == [
                (x.model, x.price_from, x.requests, x.prompt_tokens, x.completion_tokens, x.amount)
                for x in expected
            ]
            assert bill.total == sum((x.amount for x in expected), start=0)
            assert bill.unpriced_tokens == sum(
                x.prompt_tokens + x.completion_tokens for x in expected if x.price_from is None
            )
            assert bill.period_end == (period + timedelta(days=32)).replace(day=1)
        assert any(line.price_from is None for line in bill.lines)  # qwen-7b

    expected_totals = reference.tenant_totals(events)
    for source in SOURCES:
        found_totals = await totals(conn, schema, source)
        assert reference.flat(found_totals) == expected_totals


async def test_an_empty_period_has_an_empty_invoice(
    conn: AsyncConnection[Any], schema: str
) -> None:
    bill = await invoice(conn, "acme", date(2025, 12, 17), schema=schema)
    assert (bill.period, bill.period_end, bill.lines, bill.total) == (
        date(2025, 12, 1),
        date(2026, 1, 1),
        [],
        Decimal(0),
    )
