"""The audit against the real RabbitMQ, Redis and PostgreSQL, after the real agents ran.

Each test publishes simulated traffic (requests, policies, prices, and the completions and
failures an inference service would write), runs the real quota, quota-view and billing
agents in process on a topology of its own until both views are caught up, then audits.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from psycopg import sql
from typer.testing import CliRunner, Result

from events import InferenceCompleted, InferenceRequested, RequestRejected, TokensReserved, encode
from projections.quota_view import QUOTA_FIELDS
from quotaflow.cli import cli
from tests.audit.conftest import Env, run_agents, run_world

pytestmark = pytest.mark.services


async def invoke(env: Env, *args: str) -> Result:
    """``quotaflow ARGS`` against the test's deployment."""
    variables = {
        "QUOTAFLOW_STREAM_PREFIX": env.topology.prefix,
        "QUOTAFLOW_PARTITIONS": str(env.topology.partitions),
        "QUOTAFLOW_REDIS_PREFIX": env.prefix,
        "QUOTAFLOW_BILLING_SCHEMA": env.schema,
    }
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=variables)


async def test_after_a_real_run_the_audit_passes(env: Env, tmp_path: Path) -> None:
    world = await run_world(env)
    result = await env.audit()
    assert result.ok, [str(d) for d in result.findings.discrepancies[:5]]
    tallies = result.findings.tallies
    assert tallies["decision"].checked == sum(len(e) for e in world.decisions().values())
    assert tallies["billing_view"].checked > 400
    assert tallies["quota_view"].checked == 5
    assert result.pending_decisions == 0

    # the command (in a thread: it runs its own event loop): exit 0 and a report; a usage
    # error exits 2
    out = await invoke(env, "audit", "--report", str(tmp_path / "r"))
    assert out.exit_code == 0, out.output
    assert "everything agrees" in out.output
    assert (tmp_path / "r.json").exists()
    assert "<svg" in (tmp_path / "r.html").read_text()
    assert (await invoke(env, "audit", "--period", "January")).exit_code == 2


async def test_tampered_views_fail_the_audit_and_name_the_culprit(env: Env) -> None:
    await run_world(env)
    # 1. a row of the billing view changed in SQL
    cur = await env.conn.execute(
        sql.SQL(
            "SELECT tenant_id, day, model, prompt_tokens FROM {} ORDER BY tenant_id, day LIMIT 1"
        ).format(sql.Identifier(env.schema, "usage_daily"))
    )
    row = await cur.fetchone()
    assert row is not None
    tenant, day, model, prompt = row
    update = sql.SQL(
        "UPDATE {} SET prompt_tokens = %s WHERE tenant_id = %s AND day = %s AND model = %s"
    ).format(sql.Identifier(env.schema, "usage_daily"))
    await env.conn.execute(update, (prompt + 7, tenant, day, model))
    result = await env.audit()
    assert not result.ok
    (d,) = result.findings.discrepancies
    assert (d.check, d.tenant, d.expected, d.found) == ("billing_view", tenant, prompt, prompt + 7)
    assert d.field == f"{env.schema}.usage_daily[{day} {model}].prompt_tokens"
    assert d.events
    assert all(r.type == "ReservationSettled" for r in d.events)
    await env.conn.execute(update, (prompt, tenant, day, model))
    assert (await env.audit()).ok

    # 2. a Redis quota entry altered, then deleted
    tid = (await env.view().tenant_ids())[0]
    key = f"{env.prefix}q"
    raw = await env.redis.hget(key, tid)
    assert isinstance(raw, bytes)
    fields = raw.decode().split("|")
    at = QUOTA_FIELDS.index("opent")
    fields[at] = str(int(fields[at]) + 500)
    await env.redis.hset(key, tid, "|".join(fields))
    result = await env.audit()
    found = {(d.check, d.tenant, d.field) for d in result.findings.discrepancies}
    assert found == {("quota_view", tid, "open_tokens")}
    await env.redis.hdel(key, tid)
    result = await env.audit()
    (d,) = result.findings.discrepancies
    assert (d.check, d.tenant, d.field, d.found) == ("quota_view", tid, "tenant", None)
    assert d.events  # the tenant's policy and decisions


async def test_a_forged_reservation_fails_the_audit(env: Env) -> None:
    world = await run_world(env)
    rejected = next(
        e
        for evs in world.decisions().values()
        for e in evs
        if isinstance(e, RequestRejected) and e.reason == "budget"
    )
    request = next(
        e
        for evs in world.inputs().values()
        for e in evs
        if isinstance(e, InferenceRequested) and e.request_id == rejected.request_id
    )
    forged = TokensReserved(
        tenant_id=rejected.tenant_id,
        request_id=rejected.request_id,
        causation_id=request.event_id,
        tokens=rejected.requested_tokens,
        expires_at=rejected.occurred_at + timedelta(seconds=30),
        spec=request.spec,
        occurred_at=rejected.occurred_at,
    )
    stream = env.topology.quota.stream_for(rejected.tenant_id)
    await env.log.append(stream, [encode(forged)])
    offset = await env.log.tail(stream) - 1

    async def applied() -> bool:
        return await env.caught_up()

    await run_agents(env, applied)  # the views take the forged fact in like any other
    result = await env.audit()
    assert not result.ok
    decision = [d for d in result.findings.discrepancies if d.check == "decision"]
    assert len(decision) == 1
    assert (decision[0].events[0].stream, decision[0].events[0].offset) == (stream, offset)
    assert decision[0].events[0].event_id == forged.event_id
    assert decision[0].tenant == rejected.tenant_id
    assert "RequestRejected(budget)" in decision[0].detail
    assert {d.check for d in result.findings.discrepancies} == {"decision", "reservation"}


async def test_a_duplicated_completion_is_flagged_and_billed_once(env: Env) -> None:
    world = await run_world(env)
    completed = next(
        e for evs in world.inputs().values() for e in evs if isinstance(e, InferenceCompleted)
    )
    stream = env.topology.requests.stream_for(completed.tenant_id)
    await env.log.append(stream, [encode(completed)])  # a publisher without deduplication
    offset = await env.log.tail(stream) - 1

    async def applied() -> bool:
        return await env.caught_up()

    await run_agents(env, applied)
    result = await env.audit()
    assert not result.ok
    (d,) = result.findings.discrepancies
    assert d.check == "duplicate"
    assert d.tenant == completed.tenant_id
    assert d.events[1].stream == stream
    assert d.events[1].offset == offset
    assert d.events[0].event_id == completed.event_id
    # billing did not bill it twice: the view equals the events, and no request is billed twice
    tallies = result.findings.tallies
    assert tallies["billing_view"].failed == 0
    assert tallies["billed_twice"].failed == 0
    assert tallies["decision"].failed == 0  # the quota agent ignored the repeat, as decide does
