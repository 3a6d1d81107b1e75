"""The audit's log checks on an in-memory log: decisions re-executed, invariants, reports."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from events import (
    Event,
    InferenceCompleted,
    InferenceRequested,
    RequestRejected,
    ReservationSettled,
    TokensReserved,
    encode,
)
from projections.audit import AuditOptions, AuditResult, audit
from projections.audit.report import render_html, report_paths, to_json, write
from streams.memory_log import MemoryEventLog
from streams.topics import Topology
from tests.audit.workload import World, simulate

TOPO = Topology(2, prefix="m-")


@pytest.fixture(scope="module")
def world() -> World:
    return simulate(TOPO, random.Random(7), tenants=5, requests=600)


async def log_of(streams: dict[str, list[Event]]) -> MemoryEventLog:
    log = MemoryEventLog()
    for topic in TOPO.all:
        for s in topic.streams:
            await log.create_stream(s)
    for s, evs in streams.items():
        await log.append(s, [encode(e) for e in evs])
    return log


def copy(world: World) -> dict[str, list[Event]]:
    return {s: list(evs) for s, evs in world.streams.items()}


def checks_failed(result: AuditResult) -> set[str]:
    return {d.check for d in result.findings.discrepancies}


async def test_a_correct_log_passes(world: World, tmp_path: Path) -> None:
    result = await audit(await log_of(copy(world)), TOPO)
    assert result.ok, result.findings.discrepancies[:5]
    assert result.pending_decisions == 0
    assert result.stats.events == world.events
    tallies = result.findings.tallies
    assert tallies["decision"].checked == sum(len(e) for e in world.decisions().values())
    # the recomputed figures are those of the log
    settled = [
        e for evs in world.streams.values() for e in evs if isinstance(e, ReservationSettled)
    ]
    billed = sum(
        u["prompt"] + u["completion"] for t in result.tenants.values() for u in t["usage"].values()
    )
    assert billed == sum(s.prompt_tokens + s.completion_tokens for s in settled)
    assert len({p for t in result.tenants.values() for p in t["usage"]}) == 2  # Jan and Feb
    json_path, html_path = write(result, tmp_path / "audit")
    data = json.loads(json_path.read_text())
    assert data["ok"] is True
    assert data["discrepancies"] == []
    page = html_path.read_text()
    assert page.count("<svg") == len(result.tenants)
    assert "Everything agrees" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


async def test_a_forged_reservation_is_named(world: World) -> None:
    streams = copy(world)
    rejected = next(
        e
        for evs in world.decisions().values()
        for e in evs
        if isinstance(e, RequestRejected) and e.reason in ("budget", "tpm")
    )
    quota = TOPO.quota.stream_for(rejected.tenant_id)
    request = next(
        e
        for e in world.streams[TOPO.requests.stream_for(rejected.tenant_id)]
        if isinstance(e, InferenceRequested) and e.request_id == rejected.request_id
    )
    forged = TokensReserved(
        tenant_id=rejected.tenant_id,
        request_id=rejected.request_id,
        causation_id=request.event_id,
        correlation_id=rejected.request_id,
        tokens=rejected.requested_tokens,
        expires_at=rejected.occurred_at + timedelta(seconds=30),
        spec=request.spec,
        occurred_at=rejected.occurred_at,
    )
    streams[quota].append(forged)
    result = await audit(await log_of(streams), TOPO)
    assert not result.ok
    assert checks_failed(result) == {"decision", "reservation"}  # decided twice
    decision = [d for d in result.findings.discrepancies if d.check == "decision"]
    assert len(decision) == 1
    culprit = decision[0].events[0]
    assert (culprit.stream, culprit.offset, culprit.event_id) == (
        quota,
        len(streams[quota]) - 1,
        forged.event_id,
    )
    assert decision[0].tenant == rejected.tenant_id
    assert f"RequestRejected({rejected.reason})" in decision[0].detail


async def test_a_duplicated_completion_is_a_duplicate_fact_and_billed_once(world: World) -> None:
    streams = copy(world)
    completed = next(
        e for evs in world.inputs().values() for e in evs if isinstance(e, InferenceCompleted)
    )
    stream = TOPO.requests.stream_for(completed.tenant_id)
    first = streams[stream].index(completed)
    streams[stream].append(completed)
    result = await audit(await log_of(streams), TOPO)
    assert checks_failed(result) == {"duplicate"}
    (dup,) = result.findings.discrepancies
    assert [(r.stream, r.offset) for r in dup.events] == [
        (stream, first),
        (stream, len(streams[stream]) - 1),
    ]
    assert result.findings.tallies["billed_twice"].failed == 0


async def test_a_retried_request_appended_twice_is_redelivered_not_a_discrepancy(
    world: World,
) -> None:
    """An Idempotency-Key retry after an ingress crash appends the same InferenceRequested (same
    event id, a later time) again: every consumer takes the first, and so does the audit."""
    streams = copy(world)
    request = next(
        e for evs in world.inputs().values() for e in evs if isinstance(e, InferenceRequested)
    )
    stream = TOPO.requests.stream_for(request.tenant_id)
    again = request.model_copy(update={"occurred_at": request.occurred_at + timedelta(seconds=3)})
    streams[stream].append(again)
    result = await audit(await log_of(streams), TOPO)
    assert result.ok, result.findings.discrepancies[:5]
    assert result.redelivered_requests == 1
    assert any("appended twice" in w for w in result.findings.warnings)


async def test_missing_and_altered_decisions_are_named(world: World) -> None:
    streams = copy(world)
    quota = TOPO.quota.stream(0)
    settled = [i for i, e in enumerate(streams[quota]) if isinstance(e, ReservationSettled)]
    dropped = streams[quota].pop(settled[3])
    i = settled[10] - 1
    original = streams[quota][i]
    assert isinstance(original, ReservationSettled)
    streams[quota][i] = original.model_copy(update={"completion_tokens": 0})
    result = await audit(await log_of(streams), TOPO)
    found = {d.field: d for d in result.findings.discrepancies if d.check == "decision"}
    assert set(found) == {"ReservationSettled missing", "ReservationSettled.completion_tokens"}
    assert found["ReservationSettled missing"].events[0].event_id == dropped.causation_id
    assert found["ReservationSettled.completion_tokens"].events[0].offset == i
    assert found["ReservationSettled.completion_tokens"].expected == {
        "completion_tokens": original.completion_tokens
    }


async def test_a_settlement_without_reservation_breaks_the_invariants(world: World) -> None:
    streams = copy(world)
    tenant = world.tenants[0]
    rid = uuid.uuid4()
    streams[TOPO.quota.stream_for(tenant)].append(
        ReservationSettled(
            tenant_id=tenant,
            request_id=rid,
            model="echo",
            reserved=100,
            prompt_tokens=80,
            completion_tokens=60,
        )
    )
    result = await audit(await log_of(streams), TOPO, AuditOptions(tenant=tenant))
    fields = {(d.check, d.field) for d in result.findings.discrepancies}
    assert ("reservation", "reservation") in fields  # closed without a reservation
    assert ("conservation", "charged") in fields  # 140 > 100
    assert all(d.tenant == tenant for d in result.findings.discrepancies)


def test_report_paths() -> None:
    assert report_paths(Path("out/a.html")) == (Path("out/a.json"), Path("out/a.html"))
    assert report_paths(Path("a.json")) == (Path("a.json"), Path("a.html"))
    assert report_paths(Path("a")) == (Path("a.json"), Path("a.html"))


async def test_the_html_names_the_discrepancies(world: World) -> None:
    streams = copy(world)
    events = streams[TOPO.requests.stream(1)]
    events.append(next(e for e in events if isinstance(e, InferenceCompleted)))
    page = render_html(to_json(await audit(await log_of(streams), TOPO)))
    assert "1 discrepancies" in page
    assert "duplicate" in page
    assert "<table>" in page
