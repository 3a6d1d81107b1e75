"""The live Redis quota view compared with the recomputation.

Each tenant is read through :meth:`projections.quota_view.QuotaView.tenant` (the read model
the API serves) at the time the recomputation says the view is at, and compared field by
field with :func:`projections.audit.expected.quota_expected` as of the view's positions.

The view has no snapshot read across tenants, and its agent may be applying events while the
audit reads it. So the positions of a tenant's two streams are read before and after its
row: a tenant whose streams did not move in between is compared exactly; the others are read
again (up to ``attempts`` rounds) and otherwise reported as a warning, not a discrepancy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from projections.audit.expected import FIELD_REFS, QuotaExpected, quota_expected
from projections.audit.facts import Facts, Life, involved
from projections.audit.model import Discrepancy, Findings
from projections.quota_view import QuotaView
from streams.quota import TenantQuota
from streams.topics import Topology

#: Reads the log further, up to at least these positions, before the comparison uses them.
ReadMore = Callable[[Mapping[str, int]], Awaitable[None]]


def _row(found: TenantQuota | None) -> dict[str, Any] | None:
    if found is None:
        return None
    row = dataclasses.asdict(found)
    del row["tenant_id"]
    return row


async def compare_quota(
    view: QuotaView,
    topology: Topology,
    facts: Facts,
    lives: Mapping[str, list[Life]],
    findings: Findings,
    read_more: ReadMore,
    *,
    tenant: str | None = None,
    attempts: int = 3,
) -> dict[str, int]:
    """Compare every tenant (or one); returns the view's positions it was compared at."""
    streams = [*topology.requests.streams, *topology.quota.streams]
    todo: set[str] | None = None if tenant is None else {tenant}
    after: dict[str, int] = {}
    for _ in range(attempts):
        before = await view.positions(streams)
        await read_more(before)
        known = set(await view.tenant_ids())
        if todo is None:
            todo = known | {t for t in facts.tenants} | set(lives)
        rows: dict[str, tuple[QuotaExpected | None, dict[str, Any] | None, str]] = {}
        for tid in sorted(todo):
            exp = quota_expected(facts, lives.get(tid, []), tid, before)
            error = ""
            try:
                row = await view.tenant(tid, exp.at if exp is not None else None)
            except ValueError as exc:  # the view is past the expected time
                row, error = await view.tenant(tid), str(exc)
            rows[tid] = (exp, _row(row), error)
        after = await view.positions(streams)
        await read_more(after)
        moved = {s for s in streams if before[s] != after[s]}
        settled: set[str] = set()
        for tid, (exp, found, error) in rows.items():
            mine = {topology.requests.stream_for(tid), topology.quota.stream_for(tid)}
            if mine & moved:
                continue
            settled.add(tid)
            _compare(tid, exp, found, error, findings)
        todo -= settled
        if not todo:
            return after
    findings.warnings.append(
        f"quota view: {len(todo or ())} tenant(s) not compared: the view kept moving "
        f"({', '.join(sorted(todo or ())[:10])})"
    )
    return after


def _compare(
    tid: str,
    exp: QuotaExpected | None,
    found: dict[str, Any] | None,
    error: str,
    findings: Findings,
) -> None:
    findings.checked("quota_view")
    want = None if exp is None else exp.figures
    if want is None and found is None:
        return  # unknown to both, or known to the view without a policy as in the log
    if want is None or found is None:
        stages = [] if exp is None else [r for group in exp.stages.values() for r in group]
        listed, more = involved(stages)
        findings.add(
            Discrepancy(
                "quota_view",
                tid,
                "tenant",
                None if want is None else "a quota row",
                None if found is None else "a quota row",
                listed,
                more,
                "the tenant's quota row is missing from the view"
                if found is None
                else "the view has a quota for a tenant the log gives none",
            )
        )
        return
    assert exp is not None
    for name, value in want.items():
        got = found.get(name)
        if got == value:
            continue
        group = FIELD_REFS.get(name)
        listed, more = involved(exp.stages.get(group, []) if group else [])
        detail = error if name == "as_of" else ""
        findings.add(Discrepancy("quota_view", tid, name, value, got, listed, more, detail, exp.at))
