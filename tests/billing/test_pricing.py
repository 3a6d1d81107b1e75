"""Each request is billed at the price in force when it was settled, whatever the order in
which the catalog and quota streams were applied."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from psycopg import AsyncConnection

from projections.billing import apply, invoice

from .builder import Item, LogBuilder
from .reference import invoice as expected_invoice

pytestmark = pytest.mark.services

MONTH = datetime(2025, 3, 1, tzinfo=UTC)
PERIOD = date(2025, 3, 1)


def _mid_month_change() -> LogBuilder:
    log = LogBuilder(now=MONTH)
    log.price("smollm2", "1.00", "2.00", at=MONTH - timedelta(days=10))
    for _ in range(3):
        log.request("acme", "smollm2", prompt_tokens=1000, completion_tokens=500)
        log.tick(86_400)
    log.price("smollm2", "0.50", "4.00")  # from 4 March on
    for _ in range(2):
        log.request("acme", "smollm2", prompt_tokens=1000, completion_tokens=500)
        log.tick(86_400)
    return log


def _catalog_last(log: LogBuilder) -> list[Item]:
    items = log.items()
    return [i for i in items if "catalog" not in i[0]] + [i for i in items if "catalog" in i[0]]


@pytest.mark.parametrize("order", ["by-time", "prices-applied-last", "one-event-per-batch"])
async def test_a_price_change_mid_period_bills_each_request_at_its_price(
    conn: AsyncConnection[Any], schema: str, order: str
) -> None:
    log = _mid_month_change()
    items = log.items() if order == "by-time" else _catalog_last(log)
    if order == "one-event-per-batch":
        for item in items:
            await apply(conn, [item], schema)
    else:
        await apply(conn, items, schema)
    bill = await invoice(conn, "acme", PERIOD, schema=schema)
    assert [(line.requests, line.prompt_per_1k, line.amount) for line in bill.lines] == [
        (3, Decimal("1.00"), Decimal("6.00")),  # 3 × (1000 × 1.00 + 500 × 2.00) / 1000
        (2, Decimal("0.50"), Decimal("5.00")),  # 2 × (1000 × 0.50 + 500 × 4.00) / 1000
    ]
    assert (bill.total, bill.currency, bill.unpriced_tokens) == (Decimal("11.00"), "USD", 0)
    assert bill.lines[0].price_until == bill.lines[1].price_from


async def test_late_prices_reprice_usage_already_projected(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = _mid_month_change()
    items = _catalog_last(log)
    early, mid = [i for i in items if "catalog" in i[0]]
    await apply(conn, items[:-2], schema)
    unpriced = await invoice(conn, "acme", PERIOD, schema=schema)
    assert (unpriced.total, unpriced.currency, unpriced.unpriced_tokens) == (Decimal(0), None, 7500)
    assert [(line.requests, line.amount, line.prompt_per_1k) for line in unpriced.lines] == [
        (5, Decimal(0), None)
    ]
    await apply(conn, [early], schema)  # the mid-month price is not known yet
    assert (await invoice(conn, "acme", PERIOD, schema=schema)).total == Decimal("10.00")
    await apply(conn, [mid], schema)
    assert (await invoice(conn, "acme", PERIOD, schema=schema)).total == Decimal("11.00")


async def test_a_settlement_at_the_instant_of_a_price_change_gets_the_new_price(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = LogBuilder(now=MONTH)
    log.price("smollm2", "1", "1", at=MONTH - timedelta(days=1))
    log.request("acme", "smollm2", prompt_tokens=1000, completion_tokens=0)
    settled_at = log.events()[-1].occurred_at
    log.price("smollm2", "7", "7", at=settled_at)
    await apply(conn, log.items(), schema)
    bill = await invoice(conn, "acme", PERIOD, schema=schema)
    assert bill.total == Decimal("7.00")


async def test_a_correction_at_the_same_instant_replaces_the_price(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = LogBuilder(now=MONTH)
    at = MONTH - timedelta(days=1)
    log.price("smollm2", "1", "1", at=at)
    log.request("acme", "smollm2", prompt_tokens=1000, completion_tokens=1000)
    log.price("smollm2", "2", "3", at=at)
    for item in log.items():
        await apply(conn, [item], schema)
    assert (await invoice(conn, "acme", PERIOD, schema=schema)).total == Decimal("5.00")


async def test_amounts_are_rounded_half_up_per_line_not_per_request(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = LogBuilder(now=MONTH)
    log.price("smollm2", "0.025", "0.000000001", at=MONTH)
    for _ in range(2):
        log.request("acme", "smollm2", prompt_tokens=500, completion_tokens=7)
    await apply(conn, log.items(), schema)
    (line,) = (await invoice(conn, "acme", PERIOD, schema=schema)).lines
    # 1000 tokens × 0.025 / 1000 = 0.025 → 0.03 (per request: 2 × round(0.0125) = 0.02)
    assert (line.prompt_amount, line.completion_amount, line.amount) == (
        Decimal("0.03"),
        Decimal("0.00"),
        Decimal("0.03"),
    )
    expected = expected_invoice(log.events(), log.events(), "acme", PERIOD)
    assert [x.amount for x in expected] == [line.amount]


async def test_an_invoice_in_several_currencies_is_refused(
    conn: AsyncConnection[Any], schema: str
) -> None:
    log = LogBuilder(now=MONTH)
    log.price("smollm2", "1", "1", at=MONTH)
    log.price("llama-8b", "1", "1", at=MONTH, currency="EUR")
    log.request("acme", "smollm2")
    log.request("acme", "llama-8b")
    await apply(conn, log.items(), schema)
    with pytest.raises(ValueError, match="several currencies"):
        await invoice(conn, "acme", PERIOD, schema=schema)
