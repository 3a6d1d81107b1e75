"""Replay and audit rates over a realistic log, beside the raw consume rate of the same run.

The log is simulated (:mod:`tests.audit.workload`: requests, the quota agent's decisions made
by the pure ``decide``, completions, failures, expiries, prices) and published with batched
appends. Then, on the same streams:

* raw consume+decode: rstream's ``Consumer`` decoding every record (the ceiling);
* log read+decode: :func:`projections.audit.logread.read_range`, no processing;
* rebuild of the Redis quota view and of the billing view into scratch targets;
* the audit, end to end, comparing those two rebuilt views (read, recompute, re-decide,
  compare, check), and its parts: the recomputation (folding the facts, the expected view
  contents, the invariants and figures: plain Python) and the re-executed decisions.

Progress goes to stderr; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from typing import Any

from psycopg import AsyncConnection, sql
from redis.asyncio import Redis

from bench.common import Report
from bench.log_rates import raw_consume
from events import encode
from projections.audit import AuditOptions, Auditor, audit
from projections.audit.expected import billing_expected, by_tenant, quota_expected
from projections.audit.logread import gc_paused, read_range, tails
from projections.audit.model import Findings
from projections.audit.rebuild import BillingTarget, RebuildStats, rebuild
from projections.audit.summary import tenant_summaries
from projections.quota_rebuild import QuotaTarget
from projections.replay import ReadStats
from quotaflow.settings import Settings
from streams.log import Position
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.audit.workload import World, simulate

APPEND_BATCH = 5000
TARGET_RECOMPUTE = 100_000
TARGET_REBUILD = 50_000


def build(topo: Topology, events: int, report: Report) -> World:
    started = time.perf_counter()
    world = simulate(
        topo,
        random.Random(11),
        tenants=50,
        requests=max(10, events * 100 // 275),  # about 2.8 events a request
        gap_ms=30,
        prefix="bench",
    )
    report.line(f"simulated {world.events:,} events in {time.perf_counter() - started:.1f} s")
    return world


async def publish(log: RabbitEventLog, world: World, report: Report) -> dict[str, int]:
    """Batched appends; one sequence per stream (order matters), the streams concurrently."""
    started = time.perf_counter()

    async def one(stream: str) -> None:
        payloads = [encode(e) for e in world.streams[stream]]
        for i in range(0, len(payloads), APPEND_BATCH):
            await log.append(stream, payloads[i : i + APPEND_BATCH])

    await asyncio.gather(*(one(stream) for stream in world.streams))
    seconds = time.perf_counter() - started
    report.add("publish_per_s", world.events / seconds)
    report.line(f"published in {seconds:.1f} s ({world.events / seconds:,.0f}/s)")
    return {stream: len(events) for stream, events in world.streams.items()}


async def log_read(log: RabbitEventLog, ends: dict[str, int]) -> float:
    stats = ReadStats()
    started = time.perf_counter()
    with gc_paused():  # as the audit and the rebuilds read
        for stream, end in ends.items():
            async for _ in read_range(log, stream, Position.first(), end, stats=stats):
                pass
    return stats.records / (time.perf_counter() - started)


async def rebuilt(log: RabbitEventLog, target: Any, deadletter: str) -> float:
    ends = await tails(log, target.streams)
    stats = RebuildStats()
    started = time.perf_counter()
    await rebuild(log, target, {}, ends, deadletter=deadletter, stats=stats)
    return stats.read.records / (time.perf_counter() - started)


async def recompute_parts(log: RabbitEventLog, topo: Topology) -> dict[str, float]:
    """The audit without the views, timed part by part."""
    auditor = Auditor(log, topo, AuditOptions())
    with gc_paused():
        await auditor.read()
        return _recompute(auditor)


def _recompute(auditor: Auditor) -> dict[str, float]:
    t = auditor.timings
    events = auditor.stats.events
    started = time.perf_counter()
    facts = auditor.facts
    everything = billing_expected(facts, None)
    lives = by_tenant(facts)
    for tid in lives:
        quota_expected(facts, lives[tid], tid, None)
    tenant_summaries(facts, lives, billing=everything)
    findings = Findings()
    auditor.finish(findings)
    after = time.perf_counter() - started
    inputs = sum(c.inputs for c in auditor.checks)
    return {
        "events": events,
        "recompute_per_s": events / (t.fold_s + after),
        "decide_inputs_per_s": inputs / t.decide_s,
        "read_only_s": t.read_s - t.fold_s - t.decide_s,
        "discrepancies": len(findings.discrepancies),
    }


async def main(events: int, partitions: int) -> None:
    settings = Settings()
    report = Report("replay")
    run = uuid.uuid4().hex[:6]
    topo = Topology(partitions=partitions, prefix=f"bench-{run}-")
    schema, prefix = f"bench_replay_{run}", f"bench-replay-{run}:"
    deadletter = topo.deadletter.stream(0)
    log = RabbitEventLog(settings.stream_endpoint, name="bench-replay")
    redis = Redis.from_url(settings.redis_url)
    conn = await AsyncConnection.connect(settings.postgres_dsn, autocommit=True)
    world = build(topo, events, report)
    try:
        await App("bench", log, topology=topo).create_streams()
        ends = await publish(log, world, report)
        total = sum(ends.values())
        report.add("events", total)
        seconds = 0.0
        for stream, count in ends.items():
            seconds += count / await raw_consume(settings, stream, count)
        report.add("raw_consume_decode_per_s", total / seconds)
        report.line(f"raw consume+decode  {total / seconds:>10,.0f}/s")
        report.add("log_read_decode_per_s", await log_read(log, ends))
        report.line(f"log read+decode     {report.figures['log_read_decode_per_s']:>10,.0f}/s")

        quota = QuotaTarget(redis, topo, "bench-live-unused:", prefix)
        report.add("rebuild_quota_per_s", await rebuilt(log, quota, deadletter))
        report.line(f"rebuild quota view  {report.figures['rebuild_quota_per_s']:>10,.0f}/s")
        billing = BillingTarget(conn, settings.postgres_dsn, topo, "bench_live_unused", schema)
        report.add("rebuild_billing_per_s", await rebuilt(log, billing, deadletter))
        report.line(f"rebuild billing     {report.figures['rebuild_billing_per_s']:>10,.0f}/s")

        parts = await recompute_parts(log, topo)
        report.add("audit_recompute_per_s", parts["recompute_per_s"])
        report.add("audit_decide_inputs_per_s", parts["decide_inputs_per_s"])
        report.line(
            f"audit recomputation {parts['recompute_per_s']:>10,.0f}/s; decisions re-executed "
            f"{parts['decide_inputs_per_s']:,.0f} inputs/s"
        )
        started = time.perf_counter()
        result = await audit(log, topo, billing=(conn, schema), quota=quota.view)
        seconds = time.perf_counter() - started
        report.add("audit_per_s", result.stats.events / seconds)
        report.add("audit_s", seconds)
        report.add("audit_discrepancies", len(result.findings.discrepancies))
        tm = result.timings
        report.line(
            f"audit end to end    {result.stats.events / seconds:>10,.0f}/s in {seconds:.1f} s "
            f"(read+decode {tm.read_s - tm.fold_s - tm.decide_s:.1f} s, fold {tm.fold_s:.1f} s, "
            f"decide {tm.decide_s:.1f} s, views {tm.compare_s:.1f} s, checks {tm.check_s:.1f} s)"
            f"; {len(result.findings.discrepancies)} discrepancies"
        )
    finally:
        await QuotaTarget(redis, topo, "bench-live-unused:", prefix).view.clear()
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
        await conn.close()
        await redis.aclose()
        for stream in (s for t in topo.all for s in t.streams):
            await log.delete_stream(stream)
        await log.close()
    f = report.figures
    raw = f["raw_consume_decode_per_s"]
    for key in ("audit", "audit_recompute", "rebuild_quota", "rebuild_billing", "log_read_decode"):
        report.add(f"ratio_{key}_vs_raw_consume", f[f"{key}_per_s"] / raw)
    report.add("ratio_audit_recompute_vs_target", f["audit_recompute_per_s"] / TARGET_RECOMPUTE)
    report.add("ratio_rebuild_billing_vs_target", f["rebuild_billing_per_s"] / TARGET_REBUILD)
    report.add("ratio_rebuild_quota_vs_target", f["rebuild_quota_per_s"] / TARGET_REBUILD)
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000, help="about this many events")
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.partitions))
