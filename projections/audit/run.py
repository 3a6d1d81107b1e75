"""The audit: read the whole log once, recompute, re-decide, check, compare with the views.

1. :class:`Auditor` reads the streams up to their tails (``requests`` before ``quota``, so
   every result read has its reservation read too): the dead letters of the quota agent,
   the catalog, then each partition's ``requests`` and ``quota`` streams side by side. Every
   event is folded into :class:`~projections.audit.facts.Facts`; each ``requests`` input goes
   through the partition's :class:`~projections.audit.decisions.DecisionCheck` and each
   recorded decision is matched against it.
2. The billing view is read in one snapshot and compared as of its positions; the Redis view
   tenant by tenant (:mod:`projections.audit.redis_view`). A view that has applied records
   the audit has not read yet makes the auditor read on to the tails first.
3. Decisions left over and the log's invariants are checked last, on everything read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from psycopg import AsyncConnection

from projections.audit.billing_view import compare_billing, read_billing
from projections.audit.decisions import INPUT_TYPES, DecisionCheck
from projections.audit.expected import (
    billing_expected,
    by_tenant,
    month_of,
    quota_expected,
    tenant_figures,
)
from projections.audit.facts import Facts
from projections.audit.invariants import check_conservation, check_duplicates, check_lives
from projections.audit.logread import (
    Advance,
    Chunk,
    dead_lettered,
    gc_paused,
    read_range,
    tails,
)
from projections.audit.model import Discrepancy, Findings
from projections.audit.redis_view import compare_quota
from projections.audit.summary import tenant_summaries
from projections.quota_view import QuotaView
from projections.replay import ReadStats
from streams.log import EventLog, Position
from streams.topics import Topology

#: Told what the audit does now, and for reading the log how many records there are.
Phase = Callable[[str, int | None], None]


@dataclass
class AuditOptions:
    tenant: str | None = None
    period: date | None = None  # a billing period: the first day of a UTC month
    batch: int = 2000
    quota_agent: str = "quota"

    def keeps(self, d: Discrepancy) -> bool:
        if self.tenant is not None and d.tenant != self.tenant:
            return False
        return (
            self.period is None
            or d.at is None
            or month_of(d.at.astimezone(UTC).date()) == (self.period)
        )


@dataclass
class Timings:
    read_s: float = 0.0  # reading and decoding the log (and folding, interleaved)
    fold_s: float = 0.0  # folding events into facts (plain sums)
    decide_s: float = 0.0  # re-executing the quota decisions
    compare_s: float = 0.0  # reading the views and comparing
    check_s: float = 0.0  # invariants and the report's figures
    total_s: float = 0.0


@dataclass
class AuditResult:
    findings: Findings
    stats: ReadStats
    read_to: dict[str, int]
    views: dict[str, Any] = field(default_factory=dict)
    tenants: dict[str, Any] = field(default_factory=dict)
    pending_decisions: int = 0
    redelivered_requests: int = 0  # InferenceRequested appended twice by a retry, taken once
    timings: Timings = field(default_factory=Timings)
    options: AuditOptions = field(default_factory=AuditOptions)

    @property
    def ok(self) -> bool:
        return not self.findings.discrepancies


class Auditor:
    """Reads the log incrementally (``read`` again picks up where it stopped)."""

    def __init__(
        self,
        log: EventLog,
        topology: Topology,
        options: AuditOptions | None = None,
        advance: Advance | None = None,
    ) -> None:
        self.log = log
        self.topology = topology
        self.options = options or AuditOptions()
        self.advance = advance
        self.facts = Facts()
        self.stats = ReadStats()
        self.timings = Timings()
        n = topology.partitions
        self.checks = [
            DecisionCheck(topology.requests.stream(p), topology.quota.stream(p)) for p in range(n)
        ]
        self.deadletter = topology.deadletter.stream(0)
        self.streams = [
            *topology.requests.streams,
            *topology.quota.streams,
            *topology.catalog.streams,
            self.deadletter,
        ]
        self.read_to: dict[str, int] = dict.fromkeys(self.streams, 0)
        self.skip: set[tuple[str, int]] = set()

    async def tails(self) -> dict[str, int]:
        return await tails(self.log, self.streams)

    async def read(self, ends: Mapping[str, int] | None = None) -> None:
        """Read every stream on from where the last read stopped, up to ``ends`` (default:
        the tails now, read ``requests`` first, then ``quota``, catalog, dead letters)."""
        started = time.perf_counter()
        ends = dict(ends) if ends is not None else await self.tails()
        if ends[self.deadletter] > self.read_to[self.deadletter]:
            self.skip = await dead_lettered(self.log, self.deadletter, [self.options.quota_agent])
            self.read_to[self.deadletter] = ends[self.deadletter]
        for stream in self.topology.catalog.streams:
            async for chunk in self._range(stream, ends[stream]):
                t = time.perf_counter()
                for offset, event in chunk.items:
                    self.facts.add(stream, offset, event)
                self.timings.fold_s += time.perf_counter() - t
        for check in self.checks:
            await self._partition(check, ends)
        self.timings.read_s += time.perf_counter() - started

    async def ensure(self, positions: Mapping[str, int]) -> None:
        """Read on if a view has applied records past what has been read."""
        if any(pos >= self.read_to.get(s, 1 << 62) for s, pos in positions.items()):
            await self.read()

    def _range(self, stream: str, end: int) -> AsyncGenerator[Chunk, None]:
        start = self.read_to[stream]
        self.read_to[stream] = max(start, end)
        return read_range(
            self.log,
            stream,
            Position.offset(start) if start else Position.first(),
            end,
            batch=self.options.batch,
            stats=self.stats,
            advance=self.advance,
        )

    async def _partition(self, check: DecisionCheck, ends: Mapping[str, int]) -> None:
        """Feed one partition's inputs and decisions side by side."""
        rs, qs = check.requests_stream, check.quota_stream
        inputs, decisions = self._range(rs, ends[rs]), self._range(qs, ends[qs])
        facts, skip, timings = self.facts, self.skip, self.timings
        r_done = q_done = False
        try:
            while not (r_done and q_done):
                use_q = not q_done and (r_done or len(check.expected) > len(check.unmatched))
                try:
                    chunk = await anext(decisions if use_q else inputs)
                except StopAsyncIteration:
                    if use_q:
                        q_done = True
                    else:
                        r_done = True
                    continue
                t0 = time.perf_counter()
                if use_q:
                    for offset, event in chunk.items:
                        if facts.add(qs, offset, event):
                            check.recorded(offset, event)
                    timings.fold_s += time.perf_counter() - t0
                    continue
                decide_s = 0.0
                for offset, event in chunk.items:
                    facts.add(rs, offset, event)
                    if event.type in INPUT_TYPES and (rs, offset) not in skip:
                        t1 = time.perf_counter()
                        check.input(offset, event)
                        decide_s += time.perf_counter() - t1
                timings.decide_s += decide_s
                timings.fold_s += time.perf_counter() - t0 - decide_s
        finally:
            await inputs.aclose()
            await decisions.aclose()

    def finish(self, findings: Findings) -> int:
        """Decisions left over and the invariants; returns the pending decisions."""
        pending = sum(check.finish(self.facts, findings) for check in self.checks)
        check_duplicates(self.facts, findings)
        check_lives(self.facts, findings)
        return pending


async def audit(
    log: EventLog,
    topology: Topology,
    options: AuditOptions | None = None,
    *,
    billing: tuple[AsyncConnection[Any], str] | None = None,
    quota: QuotaView | None = None,
    advance: Advance | None = None,
    phase: Phase | None = None,
) -> AuditResult:
    """Audit the log and the views given (``billing``: an autocommit connection and the
    schema; ``quota``: the live view). Cyclic garbage collection is paused meanwhile (see
    :func:`~projections.audit.logread.gc_paused`)."""
    with gc_paused():
        return await _audit(
            log, topology, options or AuditOptions(), billing, quota, advance, phase
        )


async def _audit(
    log: EventLog,
    topology: Topology,
    options: AuditOptions,
    billing: tuple[AsyncConnection[Any], str] | None,
    quota: QuotaView | None,
    advance: Advance | None,
    phase: Phase | None,
) -> AuditResult:
    say = phase or (lambda _, __: None)
    started = time.perf_counter()
    auditor = Auditor(log, topology, options, advance)
    findings = Findings(keep=options.keeps)
    ends = await auditor.tails()
    say("reading the log", sum(ends.values()))
    await auditor.read(ends)
    t = time.perf_counter()
    views: dict[str, Any] = {}
    facts = auditor.facts
    everything = billing_expected(facts, None, options.tenant, options.period)
    read = dict(auditor.read_to)
    if billing is not None:
        conn, schema = billing
        say(f"comparing the billing view ({schema})", None)
        snap = await read_billing(
            conn,
            schema,
            tenant=options.tenant,
            period=options.period,
            invoices=sorted(everything.invoices),
        )
        await auditor.ensure(snap.positions)
        if auditor.read_to != read:
            everything = billing_expected(facts, None, options.tenant, options.period)
            read = dict(auditor.read_to)
        streams = [*topology.requests.streams, *topology.quota.streams, *topology.catalog.streams]
        if all(snap.positions.get(s, -1) >= read[s] - 1 for s in streams):
            exp = everything  # the view has applied everything read: no need to count again
        else:
            exp = billing_expected(facts, snap.positions, options.tenant, options.period)
        compare_billing(exp, snap, findings)
        views["billing"] = {"schema": schema, "positions": snap.positions}
    if quota is not None:
        say(f"comparing the quota view ({quota.prefix})", None)
        lives = by_tenant(auditor.facts)
        at = await compare_quota(
            quota, topology, auditor.facts, lives, findings, auditor.ensure, tenant=options.tenant
        )
        views["quota"] = {"prefix": quota.prefix, "positions": at}
    auditor.timings.compare_s = time.perf_counter() - t
    say("checking decisions and invariants", None)
    t = time.perf_counter()
    pending = auditor.finish(findings)
    if pending:
        findings.warnings.append(
            f"the quota agent has not yet recorded {pending} decision(s) of the latest inputs"
        )
    if auditor.facts.redelivered:
        findings.warnings.append(
            f"{auditor.facts.redelivered} request(s) appended twice by a client's retry (same "
            "event id); every consumer took the first copy"
        )
    for stream, offset, reason in auditor.stats.undecodable[:20]:
        findings.warnings.append(f"{stream}:{offset} does not decode ({reason}); agents skip it")
    if auditor.read_to != read:
        everything = billing_expected(facts, None, options.tenant, options.period)
    lives = by_tenant(facts)
    tenants = tenant_summaries(facts, lives, options.tenant, options.period, everything)
    for tid, summary in tenants.items():
        check_conservation(tid, summary["conservation"], findings)
        summary["quota"] = _quota_now(auditor.facts, lives.get(tid, []), tid)
    auditor.timings.check_s = time.perf_counter() - t
    auditor.timings.total_s = time.perf_counter() - started
    return AuditResult(
        findings=findings,
        stats=auditor.stats,
        read_to=dict(auditor.read_to),
        views=views,
        tenants=tenants,
        pending_decisions=pending,
        redelivered_requests=auditor.facts.redelivered,
        timings=auditor.timings,
        options=options,
    )


def _quota_now(facts: Facts, lives: list[Any], tenant: str) -> dict[str, Any] | None:
    exp = quota_expected(facts, lives, tenant, None)
    return None if exp is None else exp.figures


def generated_at() -> datetime:
    return datetime.now(UTC)


__all__ = ["AuditOptions", "AuditResult", "Auditor", "audit", "generated_at", "tenant_figures"]
