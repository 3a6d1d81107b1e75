"""The demo's tables, each built from what the HTTP API answered."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from rich.table import Table


def decisions_table(results: list[tuple[str, dict[str, Any], httpx.Response]]) -> Table:
    table = Table(title="POST /v1/requests: the quota's answers")
    for col in ("tenant", "202 accepted", "rejected", "status: reason", "Retry-After"):
        table.add_column(col)
    by_tenant: dict[str, Counter[str]] = {}
    retry: dict[str, set[str]] = {}
    for who, _, r in results:
        c = by_tenant.setdefault(who, Counter())
        if r.status_code == 202:
            c["accepted"] += 1
        else:
            try:
                error = r.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": f"HTTP {r.status_code}"}
            details = error.get("details") or {}
            c[f"{r.status_code}:{details.get('reason', error.get('code'))}"] += 1
            if "Retry-After" in r.headers:
                retry.setdefault(who, set()).add(r.headers["Retry-After"])
    for who, c in sorted(by_tenant.items()):
        rejected = {k: v for k, v in c.items() if k != "accepted"}
        table.add_row(
            who,
            str(c["accepted"]),
            str(sum(rejected.values())),
            ", ".join(f"{k} ×{v}" for k, v in rejected.items()) or "—",
            ", ".join(_duration(int(s)) for s in sorted(retry.get(who, ()), key=int)[:3]) or "—",
        )
    return table


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86_400:.1f} days"


def answers_table(questions: list[tuple[str, dict[str, Any] | None]]) -> Table:
    table = Table(title="SmolLM2 through Triton (GET /v1/requests/{id})")
    for col in ("question", "answer", "status", "tokens: estimated → actual"):
        table.add_column(col)
    for prompt, view in questions:
        if view is None:
            table.add_row(prompt, "[red]no answer", "—", "—")
            continue
        actual = view.get("actual_tokens") or {}
        table.add_row(
            prompt,
            (view.get("text") or view.get("failure_reason") or "").strip(),
            view["status"],
            f"{view.get('estimated_tokens')} → {actual.get('total', '—')}",
        )
    return table


def quota_table(quotas: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="Redis quota view (GET /v1/tenants/{t}/quota)")
    cols = ("tenant", "budget", "used", "reserved", "remaining", "open", "rejected")
    for col in cols:
        table.add_column(col, justify="right")
    for name, q in quotas.items():
        table.add_row(
            name,
            *(f"{q[k]:,}" for k in ("budget", "used", "reserved", "remaining")),
            str(q["open_reservations"]),
            str(q["rejected"]),
        )
    return table


def billing_table(usage: dict[str, dict[str, Any]], invoices: dict[str, dict[str, Any]]) -> Table:
    table = Table(
        title="PostgreSQL billing view (GET /v1/tenants/{t}/usage and /invoices/{period})"
    )
    for col in ("tenant", "model", "requests", "prompt tokens", "completion tokens", "amount"):
        table.add_column(col, justify="right")
    for name, inv in invoices.items():
        for line in inv["lines"]:
            table.add_row(
                name,
                line["model"],
                str(line["requests"]),
                f"{line['prompt_tokens']:,}",
                f"{line['completion_tokens']:,}",
                f"{line['amount']} {line.get('currency') or ''}",
            )
        u = usage[name]
        table.add_row(
            name,
            "[bold]total",
            str(u["requests"]),
            f"{u['prompt_tokens']:,}",
            f"{u['completion_tokens']:,}",
            f"[bold]{inv['total']} {inv.get('currency') or ''}",
        )
    return table
