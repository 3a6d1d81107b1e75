"""``just bench-quota``: quota decisions/s end to end through RabbitMQ and Redis quota-view
events/s, each beside the raw rstream ceiling (consume + re-publish) of the same run.

Decisions: InferenceRequested events in ``requests``, the quota agent's decisions out in
``quota`` (confirmed, positions committed). View: the decisions (and policies) applied to
Redis by the quota-view agent, positions stored atomically with the view.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from bench.agent_rates import ceiling
from bench.common import Report
from events import InferenceRequested, QuotaPolicy, TenantRegistered, encode
from events.model import RequestSpec
from projections.quota_view import QuotaView
from quotaflow.settings import Settings
from quotaflow.wiring import build_app
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from streams.topics import Topology


def workload(count: int, tenants: int) -> list[bytes]:
    t0 = datetime(2026, 11, 2, tzinfo=UTC)
    out = []
    for t in range(tenants):
        out.append(
            encode(
                TenantRegistered(
                    tenant_id=f"tenant-{t}",
                    name=f"tenant {t}",
                    api_key_hash=hashlib.sha256(str(t).encode()).hexdigest(),
                    policy=QuotaPolicy(token_budget=10**12, tokens_per_minute=10**9),
                    occurred_at=t0,
                )
            )
        )
    for i in range(count):
        out.append(
            encode(
                InferenceRequested(
                    tenant_id=f"tenant-{i % tenants}",
                    request_id=uuid.uuid4(),
                    spec=RequestSpec(
                        model="echo", prompt="Write a haiku about streams.", max_tokens=64
                    ),
                    estimated_prompt_tokens=30,
                    occurred_at=t0 + timedelta(microseconds=i * 100),
                )
            )
        )
    return out


async def run_agent(app: App, agent: str, streams: list[str], targets: dict[str, int]) -> float:
    stop = asyncio.Event()
    runner = AgentRunner(app, [agent], StaticOwnership(), interval=0.2, lag_every=10**9)
    started = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))

    def behind() -> bool:
        done: dict[str, int] = {}
        for worker, _ in runner.workers.values():
            done.update(worker._done_pos)
        return any(done.get(s, -1) < targets[s] - 1 for s in streams)

    while behind():  # noqa: ASYNC110 - polling the runner's committed positions
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return elapsed


async def main(count: int) -> None:
    settings = Settings()
    report = Report("quota")
    run = uuid.uuid4().hex[:6]
    topo = Topology(partitions=1, prefix=f"bench-{run}-")
    prefix = f"bench-{run}:"
    cfg = settings.model_copy(
        update={
            "stream_prefix": topo.prefix,
            "partitions": 1,
            "redis_prefix": prefix,
            "quota_tick_s": 0,
        }
    )
    app = build_app(cfg)
    log = app.log
    assert isinstance(log, RabbitEventLog)
    raw_in, raw_out = f"bench-{run}-raw-in", f"bench-{run}-raw-out"
    redis = Redis.from_url(settings.redis_url)
    try:
        await app.create_streams()
        payloads = workload(count, tenants=20)
        for stream in (topo.requests.stream(0), raw_in):
            await log.create_stream(stream)
            for i in range(0, len(payloads), 5000):
                await log.append(stream, payloads[i : i + 5000])
        report.add("requests", count)
        report.add("ceiling_per_s", await ceiling(settings, raw_in, raw_out, len(payloads)))
        report.line(f"raw consume + re-publish {report.figures['ceiling_per_s']:>10,.0f}/s")

        requests, quota = topo.requests.stream(0), topo.quota.stream(0)
        seconds = await run_agent(app, "quota", [requests], {requests: len(payloads)})
        report.add("decisions_per_s", count / seconds)
        report.line(f"quota decisions          {report.figures['decisions_per_s']:>10,.0f}/s")

        decisions = await log.tail(quota)
        seconds = await run_agent(
            app, "quota-view", [quota], {quota: decisions, requests: len(payloads)}
        )
        report.add("view_events_per_s", decisions / seconds)
        report.line(f"Redis view events        {report.figures['view_events_per_s']:>10,.0f}/s")
    finally:
        await QuotaView(redis, prefix).clear()
        await redis.delete(prefix + "pos")
        await redis.aclose()
        for stream in (raw_in, raw_out, *(s for t in topo.all for s in t.streams)):
            await log.delete_stream(stream)
        await app.close()
    f = report.figures
    report.add("ratio_decisions_vs_ceiling", f["decisions_per_s"] / f["ceiling_per_s"])
    report.add("ratio_view_vs_ceiling", f["view_events_per_s"] / f["ceiling_per_s"])
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().requests))
