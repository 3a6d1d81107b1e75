"""The live PostgreSQL billing view, read in one snapshot and compared with the recomputation.

The view's tables are read with plain ``SELECT``\\ s in one ``REPEATABLE READ`` transaction
(positions and rows agree), and the invoices through :func:`projections.billing.invoice`, the
read the API serves, inside the same snapshot. The expected content comes from
:func:`projections.audit.expected.billing_expected` as of the positions read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, LiteralString

from psycopg import AsyncConnection, sql

from projections.audit.expected import BillingExpected, Invoice
from projections.audit.facts import Stage, involved
from projections.audit.model import Discrepancy, Findings
from projections.billing import Invoice as ViewInvoice
from projections.billing import invoice

Key = tuple[str, date, str]
_LEDGER = ("request_id", "tenant", "model", "reserved", "prompt", "completion", "settled_at")
_REQUEST = (
    "tenant",
    "model",
    "status",
    "reserved_tokens",
    "prompt",
    "completion",
    "settled_prompt",
    "settled_completion",
)


@dataclass
class BillingSnapshot:
    schema: str
    positions: dict[str, int] = field(default_factory=dict)
    ledger: dict[uuid.UUID, tuple[Any, ...]] = field(default_factory=dict)
    billed: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)
    daily: dict[Key, tuple[int, int, int]] = field(default_factory=dict)
    monthly: dict[Key, tuple[int, int, int]] = field(default_factory=dict)
    requests: dict[uuid.UUID, tuple[Any, ...]] = field(default_factory=dict)
    invoices: dict[tuple[str, date], ViewInvoice | str] = field(default_factory=dict)


def _where(
    tenant: str | None, period: date | None, month_of_row: LiteralString
) -> tuple[sql.Composable, list[Any]]:
    """``WHERE`` for ``--tenant`` / ``--period``; ``month_of_row`` is an SQL expression
    giving the UTC month (a date) a row belongs to."""
    parts: list[sql.Composable] = []
    args: list[Any] = []
    if tenant is not None:
        parts.append(sql.SQL("tenant_id = %s"))
        args.append(tenant)
    if period is not None:
        parts.append(sql.SQL(month_of_row) + sql.SQL(" = %s"))
        args.append(period)
    if not parts:
        return sql.SQL(""), args
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), args


async def read_billing(
    conn: AsyncConnection[Any],
    schema: str,
    *,
    tenant: str | None = None,
    period: date | None = None,
    invoices: Iterable[tuple[str, date]] = (),
) -> BillingSnapshot:
    """The view in one snapshot. ``conn`` must have no transaction open (autocommit)."""
    snap = BillingSnapshot(schema)

    def t(name: str) -> sql.Identifier:
        return sql.Identifier(schema, name)

    first_month = (
        "date_trunc('month', LEAST(requested_at, reserved_at, rejected_at, completed_at,"
        " failed_at, settled_at, released_at, expired_at) AT TIME ZONE 'UTC')::date"
    )
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = await conn.execute(
            sql.SQL("SELECT stream, last_offset FROM {}").format(t("positions"))
        )
        snap.positions = {s: o for s, o in await cur.fetchall()}
        where, args = _where(tenant, period, "period")
        cur = await conn.execute(
            sql.SQL(
                "SELECT event_id, request_id, tenant_id, model, reserved_tokens, prompt_tokens,"
                " completion_tokens, settled_at FROM {}{}"
            ).format(t("usage_ledger"), where),
            args,
        )
        for eid, *row in await cur.fetchall():
            snap.ledger[eid] = tuple(row)
            snap.billed.setdefault(row[0], []).append(eid)
        for name, key, target in (
            ("usage_daily", "day", snap.daily),
            ("usage_period", "period", snap.monthly),
        ):
            month: LiteralString = "date_trunc('month', " + key + ")::date"
            where, args = _where(tenant, period, month)
            cur = await conn.execute(
                sql.SQL(
                    "SELECT tenant_id, {}, model, requests, prompt_tokens, completion_tokens"
                    " FROM {}{}"
                ).format(sql.Identifier(key), t(name), where),
                args,
            )
            for tid, day, model, n, p, c in await cur.fetchall():
                target[(tid, day, model)] = (n, p, c)
        where, args = _where(tenant, period, first_month)
        cur = await conn.execute(
            sql.SQL(
                "SELECT request_id, tenant_id, model, status, reserved_tokens, prompt_tokens,"
                " completion_tokens, settled_prompt_tokens, settled_completion_tokens FROM {}{}"
            ).format(t("requests"), where),
            args,
        )
        for rid, *row in await cur.fetchall():
            snap.requests[rid] = tuple(row)
        wanted = set(invoices) | {(tid, p) for tid, p, _ in snap.monthly}
        for tid, p in sorted(wanted):
            try:
                snap.invoices[(tid, p)] = await invoice(conn, tid, p, schema=schema)
            except ValueError as exc:
                snap.invoices[(tid, p)] = f"error: {exc}"
    return snap


def _add(
    findings: Findings,
    tenant: str | None,
    what: str,
    expected: Any,
    found: Any,
    stages: Sequence[Stage],
    detail: str = "",
    at: datetime | None = None,
) -> None:
    listed, more = involved(stages)
    findings.add(
        Discrepancy("billing_view", tenant, what, expected, found, listed, more, detail, at)
    )


def compare_billing(exp: BillingExpected, snap: BillingSnapshot, findings: Findings) -> None:
    s = snap.schema
    # the ledger, row by row (one row per settlement event)
    findings.checked("billing_view", len(exp.ledger.keys() | snap.ledger.keys()))
    for eid, row in exp.ledger.items():
        want = row.values()
        got = snap.ledger.get(eid)
        if got is None:
            _add(
                findings,
                row.tenant,
                f"{s}.usage_ledger[{eid}]",
                "a row",
                None,
                [row.settled],
                "a settlement of the log is not in the ledger",
                row.settled.at,
            )
            continue
        for name, a, b in zip(_LEDGER, want, got, strict=True):
            if a != b:
                _add(
                    findings,
                    row.tenant,
                    f"{s}.usage_ledger[{eid}].{name}",
                    a,
                    b,
                    [row.settled],
                    at=row.settled.at,
                )
    for eid in snap.ledger.keys() - exp.ledger.keys():
        got = snap.ledger[eid]
        _add(
            findings,
            got[1],
            f"{s}.usage_ledger[{eid}]",
            None,
            "a row",
            [],
            "a ledger row with no settlement in the log (as far as the view has read it)",
        )
    # billed at most once per request
    findings.checked("billed_twice", len(snap.billed))
    for rid, rows in snap.billed.items():
        if len(rows) > 1:
            findings.add(
                Discrepancy(
                    "billed_twice",
                    snap.ledger[rows[0]][1],
                    f"{s}.usage_ledger request {rid}",
                    1,
                    len(rows),
                    detail="ledger rows " + ", ".join(map(str, rows)),
                )
            )
    # the aggregates
    for table, want_rows, got_rows in (
        ("usage_daily", exp.daily, snap.daily),
        ("usage_period", exp.monthly, snap.monthly),
    ):
        findings.checked("billing_view", len(want_rows.keys() | got_rows.keys()))
        for key in sorted(want_rows.keys() | got_rows.keys()):
            totals = want_rows.get(key)
            counted = (
                (0, 0, 0) if totals is None else (totals.requests, totals.prompt, totals.completion)
            )
            stored = got_rows.get(key, (0, 0, 0))
            for name, a, b in zip(
                ("requests", "prompt_tokens", "completion_tokens"), counted, stored, strict=True
            ):
                if a != b:
                    tid, day, model = key
                    _add(
                        findings,
                        tid,
                        f"{s}.{table}[{day} {model}].{name}",
                        a,
                        b,
                        [] if totals is None else totals.stages,
                    )
    _compare_requests(exp, snap, findings)
    _compare_invoices(exp, snap, findings)


def _compare_requests(exp: BillingExpected, snap: BillingSnapshot, findings: Findings) -> None:
    s = snap.schema
    findings.checked("billing_view", len(exp.requests.keys() | snap.requests.keys()))
    for rid, row in exp.requests.items():
        got = snap.requests.get(rid)
        if got is None:
            _add(
                findings,
                row.tenant,
                f"{s}.requests[{rid}]",
                row.status,
                None,
                row.stages,
                "a request of the log is not in the view",
            )
            continue
        want: tuple[Any, ...] = (
            row.tenant,
            row.models,
            row.status,
            row.reserved_tokens,
            row.prompt,
            row.completion,
            row.settled_prompt,
            row.settled_completion,
        )
        for name, a, b in zip(_REQUEST, want, got, strict=True):
            same = (b in a or (not a and b is None)) if name == "model" else a == b
            if not same:
                shown = sorted(a) if isinstance(a, set) else a
                _add(findings, row.tenant, f"{s}.requests[{rid}].{name}", shown, b, row.stages)
    for rid in snap.requests.keys() - exp.requests.keys():
        got = snap.requests[rid]
        _add(
            findings,
            got[0],
            f"{s}.requests[{rid}]",
            None,
            got[2],
            [],
            "a request row with no event in the log (as far as the view has read it)",
        )


def _compare_invoices(exp: BillingExpected, snap: BillingSnapshot, findings: Findings) -> None:
    s = snap.schema
    keys = exp.invoices.keys() | snap.invoices.keys()
    findings.checked("billing_view", len(keys))
    for key in sorted(keys):
        tid, period = key
        want = exp.invoices.get(key, Invoice())
        got = snap.invoices.get(key)
        name = f"{s} invoice {tid} {period:%Y-%m}"
        if isinstance(got, str) or got is None:
            _add(findings, tid, name, str(want.total), got, want.stages)
            continue
        got_lines = {(line.model, line.price_from): line for line in got.lines}
        for lkey in sorted(want.lines.keys() | got_lines.keys(), key=_line_order):
            w, g = want.lines.get(lkey), got_lines.get(lkey)
            a: tuple[int | Decimal, ...] = (
                (0, 0, 0, Decimal("0.00"))
                if w is None
                else (w.requests, w.prompt, w.completion, w.amount)
            )
            b: tuple[int | Decimal, ...] = (
                (0, 0, 0, Decimal("0.00"))
                if g is None
                else (g.requests, g.prompt_tokens, g.completion_tokens, g.amount)
            )
            for field_, x, y in zip(
                ("requests", "prompt_tokens", "completion_tokens", "amount"), a, b, strict=True
            ):
                if x != y:
                    price = "unpriced" if lkey[1] is None else f"price from {lkey[1].isoformat()}"
                    _add(
                        findings,
                        tid,
                        f"{name} [{lkey[0]} {price}].{field_}",
                        _num(x),
                        _num(y),
                        [] if w is None else w.stages,
                    )
        if want.total != got.total:
            _add(findings, tid, f"{name}.total", str(want.total), str(got.total), want.stages)


def _num(value: int | Decimal) -> int | str:
    return str(value) if isinstance(value, Decimal) else value


def _line_order(key: tuple[str, datetime | None]) -> tuple[str, bool, str]:
    return key[0], key[1] is not None, "" if key[1] is None else key[1].isoformat()


def positions_ahead(view: Mapping[str, int], read_to: Mapping[str, int]) -> bool:
    """Whether the view has applied records past what the audit has read."""
    return any(pos >= read_to.get(stream, 0) for stream, pos in view.items())
