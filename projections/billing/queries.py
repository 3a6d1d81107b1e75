"""Reads of the billing view, with typed results the HTTP API serves.

Money is :class:`~decimal.Decimal`. An invoice line is priced on its aggregated tokens:
``amount = round_half_up(tokens × price_per_1k / 1000, cents)`` for prompt and completion
tokens separately, and the invoice total is the sum of its line amounts. Lines are per model
*and per price in force*: a price change mid-period splits a model's usage into two lines,
each at the price that was in force when its requests were settled.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict

from projections.billing.db import Target, connection
from projections.billing.migrate import DEFAULT_SCHEMA
from projections.billing.rows import period_of

CENT = Decimal("0.01")
RequestStatus = Literal[
    "requested", "reserved", "rejected", "completed", "failed", "settled", "released", "expired"
]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RequestRecord(_Result):
    """The lifecycle of one request; a stage's fields are ``None`` until its event is applied."""

    request_id: uuid.UUID
    tenant_id: str
    model: str | None
    status: RequestStatus
    reserved_tokens: int | None
    requested_at: datetime | None
    estimated_prompt_tokens: int | None
    max_tokens: int | None
    estimated_tokens: int | None
    priority: int | None
    idempotency_key: str | None
    reserved_at: datetime | None
    expires_at: datetime | None
    rejected_at: datetime | None
    reject_reason: str | None
    reject_detail: str | None
    rejected_tokens: int | None
    retry_after_s: float | None
    completed_at: datetime | None
    model_version: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    failed_at: datetime | None
    failure_reason: str | None
    retryable: bool | None
    settled_at: datetime | None
    settled_prompt_tokens: int | None
    settled_completion_tokens: int | None
    released_at: datetime | None
    release_reason: str | None
    expired_at: datetime | None


class UsageRow(_Result):
    """Settled usage of one day (``group_by="day"``) or one model (``group_by="model"``)."""

    day: date | None = None
    model: str | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Usage(_Result):
    tenant_id: str
    start: date
    end: date
    group_by: Literal["day", "model"]
    rows: list[UsageRow]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class InvoiceLine(_Result):
    """Usage of one model at one price. Price fields are ``None`` for usage settled before the
    model had any price; such a line is not charged (``amount == 0``)."""

    model: str
    price_from: datetime | None
    price_until: datetime | None
    currency: str | None
    prompt_per_1k: Decimal | None
    completion_per_1k: Decimal | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    prompt_amount: Decimal
    completion_amount: Decimal
    amount: Decimal


class Invoice(_Result):
    tenant_id: str
    period: date
    period_end: date
    currency: str | None
    lines: list[InvoiceLine]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    unpriced_tokens: int
    total: Decimal


class TenantTotals(_Result):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def charge(tokens: int, per_1k: Decimal) -> Decimal:
    """``tokens`` at ``per_1k`` per thousand, rounded half up to the cent (exact before that)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return (Decimal(tokens) * per_1k / 1000).quantize(CENT, rounding=ROUND_HALF_UP)


def next_period(period: date) -> date:
    start = period_of(period)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


async def request(
    target: Target, request_id: uuid.UUID, *, schema: str = DEFAULT_SCHEMA
) -> RequestRecord | None:
    fields = sql.SQL(", ").join(sql.Identifier(f) for f in RequestRecord.model_fields)
    query = sql.SQL("SELECT {} FROM {} WHERE request_id = %s").format(
        fields, sql.Identifier(schema, "requests")
    )
    async with (
        connection(target) as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        await cur.execute(query, (request_id,))
        row = await cur.fetchone()
    return None if row is None else RequestRecord.model_validate(row)


async def usage(
    target: Target,
    tenant_id: str,
    start: date,
    end: date,
    group_by: Literal["day", "model"] = "day",
    *,
    schema: str = DEFAULT_SCHEMA,
) -> Usage:
    """Settled usage of ``tenant_id`` on the UTC days ``start <= day < end``."""
    key = sql.Identifier(group_by)
    query = sql.SQL(
        "SELECT {key}, sum(requests)::bigint, sum(prompt_tokens)::bigint,"
        " sum(completion_tokens)::bigint FROM {table}"
        " WHERE tenant_id = %s AND day >= %s AND day < %s GROUP BY {key} ORDER BY {key}"
    ).format(key=key, table=sql.Identifier(schema, "usage_daily"))
    async with connection(target) as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(query, (tenant_id, start, end))
        found = await cur.fetchall()
    rows = [
        UsageRow(
            day=k if group_by == "day" else None,
            model=k if group_by == "model" else None,
            requests=n,
            prompt_tokens=p,
            completion_tokens=c,
            total_tokens=p + c,
        )
        for k, n, p, c in found
    ]
    prompt = sum(r.prompt_tokens for r in rows)
    completion = sum(r.completion_tokens for r in rows)
    return Usage(
        tenant_id=tenant_id,
        start=start,
        end=end,
        group_by=group_by,
        rows=rows,
        requests=sum(r.requests for r in rows),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
    )


async def invoice(
    target: Target, tenant_id: str, period: date, *, schema: str = DEFAULT_SCHEMA
) -> Invoice:
    """The invoice of ``tenant_id`` for the calendar month (UTC) that contains ``period``.

    Raises :class:`ValueError` if the period's usage is priced in more than one currency.
    """
    start = period_of(period)
    query = sql.SQL(
        "SELECT model, valid_from, valid_to, currency, prompt_per_1k, completion_per_1k,"
        " requests, prompt_tokens, completion_tokens FROM {}"
        " WHERE tenant_id = %s AND period = %s ORDER BY model, valid_from NULLS FIRST"
    ).format(sql.Identifier(schema, "invoice_lines"))
    async with connection(target) as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(query, (tenant_id, start))
        found = await cur.fetchall()
    lines = [_line(*row) for row in found]
    currencies = {line.currency for line in lines if line.currency is not None}
    if len(currencies) > 1:
        raise ValueError(f"{tenant_id} {start}: usage priced in several currencies {currencies}")
    return Invoice(
        tenant_id=tenant_id,
        period=start,
        period_end=next_period(start),
        currency=currencies.pop() if currencies else None,
        lines=lines,
        requests=sum(line.requests for line in lines),
        prompt_tokens=sum(line.prompt_tokens for line in lines),
        completion_tokens=sum(line.completion_tokens for line in lines),
        unpriced_tokens=sum(
            line.prompt_tokens + line.completion_tokens for line in lines if line.currency is None
        ),
        total=sum((line.amount for line in lines), Decimal("0.00")),
    )


def _line(
    model: str,
    price_from: datetime | None,
    price_until: datetime | None,
    currency: str | None,
    prompt_per_1k: Decimal | None,
    completion_per_1k: Decimal | None,
    requests: int,
    prompt_tokens: int,
    completion_tokens: int,
) -> InvoiceLine:
    prompt_amount = (
        Decimal("0.00") if prompt_per_1k is None else charge(prompt_tokens, prompt_per_1k)
    )
    completion_amount = (
        Decimal("0.00")
        if completion_per_1k is None
        else charge(completion_tokens, completion_per_1k)
    )
    return InvoiceLine(
        model=model,
        price_from=price_from,
        price_until=price_until,
        currency=currency,
        prompt_per_1k=prompt_per_1k,
        completion_per_1k=completion_per_1k,
        requests=requests,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_amount=prompt_amount,
        completion_amount=completion_amount,
        amount=prompt_amount + completion_amount,
    )


async def totals(
    target: Target,
    schema: str = DEFAULT_SCHEMA,
    source: Literal["usage_period", "usage_daily", "usage_ledger"] = "usage_period",
) -> dict[str, TenantTotals]:
    """Settled tokens per tenant over all time, for audits.

    ``source`` picks the table summed: the period aggregate (default), the daily aggregate or
    the ledger itself, so an audit can also check the view's tables against each other.
    """
    count = sql.SQL("count(*)" if source == "usage_ledger" else "sum(requests)")
    query = sql.SQL(
        "SELECT tenant_id, {}::bigint, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint"
        " FROM {} GROUP BY tenant_id ORDER BY tenant_id"
    ).format(count, sql.Identifier(schema, source))
    async with connection(target) as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(query)
        found: list[tuple[Any, ...]] = await cur.fetchall()
    return {
        tenant: TenantTotals(requests=n, prompt_tokens=p, completion_tokens=c, total_tokens=p + c)
        for tenant, n, p, c in found
    }
