"""The inference agent on the in-memory log with a fake model: results, priority, exactly once."""

from __future__ import annotations

import asyncio
import random
import uuid

from events import InferenceCompleted, InferenceFailed, RequestRejected, derive_id
from events.model import ChatMessage
from streams.agents.inference import InferenceSettings, dispatch_order, register_inference
from streams.agents.inference_client import CallError
from streams.memory_log import MemoryEventLog
from streams.runtime.app import App
from streams.runtime.worker import PartitionWorker
from streams.topics import Topology
from tests.inference.helpers import FakeModel, per_request, publish, reservation, results
from tests.runtime.helpers import read_all, run_until

FAST = InferenceSettings(
    batch=32, within_ms=5, concurrency=8, attempts=3, backoff_s=0.01, backoff_max_s=0.02
)


async def make_app(partitions: int = 2, offsets: MemoryEventLog | None = None) -> App:
    app = App("test", MemoryEventLog(), offsets=offsets, topology=Topology(partitions=partitions))
    await app.create_streams()
    return app


def result_count(app: App) -> int:
    log = app.log
    assert isinstance(log, MemoryEventLog)
    return sum(len(log._streams[s]) for s in app.topology.requests.streams)


async def run_agent(app: App, count: int) -> None:
    await run_until(app, ["inference"], lambda: result_count(app) >= count, timeout=20)


async def test_each_reservation_gets_one_completion() -> None:
    app = await make_app()
    reservations = [reservation(i) for i in range(300)]
    await publish(app, reservations)
    model = FakeModel(delay_s=0.001)
    register_inference(app, client=model, options=FAST)
    await run_agent(app, 300)
    found = await results(app.log, app.topology)
    assert len(found) == 300
    assert set(per_request(found).values()) == {1}
    by_request = {r.request_id: r for r in reservations}
    for e in found:
        r = by_request[e.request_id]
        assert isinstance(e, InferenceCompleted)
        assert e.event_id == derive_id(r.event_id, "inference")
        assert e.causation_id == r.event_id
        assert e.correlation_id == r.request_id
        assert e.tenant_id == r.tenant_id
        assert e.headers == r.headers
        assert (e.model, e.model_version) == ("echo", "7")
        assert (e.prompt_tokens, e.completion_tokens, e.text) == (3, 4, " the" * 4)
        assert e.occurred_at > r.occurred_at  # the wall clock when the result came back
    assert 1 < model.max_in_flight <= FAST.concurrency
    assert not model.closed
    await app.close()
    assert model.closed


async def test_results_land_on_the_tenant_s_partition_of_requests() -> None:
    app = await make_app(partitions=3)
    await publish(app, [reservation(i, tenants=7) for i in range(70)])
    register_inference(app, client=FakeModel(), options=FAST)
    await run_agent(app, 70)
    topic = app.topology.requests
    for stream in topic.streams:
        got = await read_all(app.log, [stream])
        assert got
        assert {topic.stream_for(e.tenant_id) for e in got} == {stream}


async def test_other_quota_decisions_are_ignored() -> None:
    app = await make_app(partitions=1)
    reservations = [reservation(i) for i in range(50)]
    rejected = [
        RequestRejected(tenant_id=r.tenant_id, request_id=uuid.uuid4(), reason="budget")
        for r in reservations
    ]
    await app.topic(app.topology.quota).send_many(
        [e for pair in zip(reservations, rejected, strict=True) for e in pair]
    )
    model = FakeModel()
    register_inference(app, client=model, options=FAST)
    await run_agent(app, 50)
    await asyncio.sleep(0.05)
    found = await results(app.log, app.topology)
    assert [e.request_id for e in found] == [r.request_id for r in reservations]
    assert len(model.calls) == 50


async def test_chat_messages_and_failures_are_results_too() -> None:
    app = await make_app(partitions=1)
    messages = [ChatMessage(role="user", content="hello")]
    batch = [
        reservation(0, messages=messages),
        reservation(1, model="gpt-17"),
        reservation(2),
        reservation(3),
    ]
    await publish(app, batch)
    ids = [str(r.request_id) for r in batch]
    model = FakeModel(
        errors={
            ids[1]: [CallError("NOT_FOUND: Request for unknown model: 'gpt-17'", retryable=False)],
            ids[2]: [CallError("UNAVAILABLE: down", retryable=True)] * 9,
            ids[3]: [CallError("UNAVAILABLE: down", retryable=True)],
        }
    )
    register_inference(app, client=model, options=FAST)
    await run_agent(app, 4)
    found = {e.request_id.int - 1: e for e in await results(app.log, app.topology)}
    assert isinstance(found[0], InferenceCompleted)
    unknown, down, recovered = found[1], found[2], found[3]
    assert isinstance(unknown, InferenceFailed)
    assert (unknown.model, unknown.retryable) == ("gpt-17", False)
    assert unknown.reason == "NOT_FOUND: Request for unknown model: 'gpt-17'"
    assert unknown.event_id == derive_id(batch[1].event_id, "inference")
    assert isinstance(down, InferenceFailed)
    assert down.retryable
    assert down.reason.startswith("gave up after 3 attempt(s)")
    assert isinstance(recovered, InferenceCompleted)


async def test_dispatch_order_is_priority_then_log_order() -> None:
    priorities = [0, 5, 9, 5, 0, 9, 1]
    batch = [reservation(i, priority=p) for i, p in enumerate(priorities)]
    assert dispatch_order(batch) == [2, 5, 1, 3, 6, 0, 4]


async def test_a_backlog_is_served_highest_priority_first() -> None:
    """One partition, one call at a time: a batch's calls run in priority order."""
    app = await make_app(partitions=1)
    rng = random.Random(5)
    backlog = [reservation(i, priority=rng.randrange(10)) for i in range(40)]
    await publish(app, backlog)
    model = FakeModel(delay_s=0.001)
    opts = InferenceSettings(batch=40, within_ms=200, concurrency=1)
    register_inference(app, client=model, options=opts)
    await run_agent(app, 40)
    expected = [str(r.request_id) for r in sorted(backlog, key=lambda r: -r.spec.priority)]
    assert model.calls == expected
    # results are emitted for every reservation, in log order
    found = await results(app.log, app.topology)
    assert [e.request_id for e in found] == [r.request_id for r in backlog]


async def test_a_crash_before_the_flush_neither_loses_nor_duplicates() -> None:
    """Kill the worker task at arbitrary points (nothing flushed, nothing committed)."""
    app = await make_app(partitions=1)
    await publish(app, [reservation(i) for i in range(2000)])
    model = FakeModel(delay_s=0.002)
    register_inference(app, client=model, options=FAST)
    for crash_after in (0.05, 0.1, 0.02, 0.2):
        worker = PartitionWorker(app, app.agents["inference"], 0)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(crash_after)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert 0 < result_count(app) < 2000
    await run_agent(app, 2000)
    await asyncio.sleep(0.1)
    found = await results(app.log, app.topology)
    assert len(found) == 2000
    assert set(per_request(found).values()) == {1}
    assert len(model.calls) > 2000  # some reservations were run twice; one result each


async def test_a_rerun_after_a_lost_commit_keeps_the_first_result() -> None:
    """Results published, position not committed (a crash in between): the re-run calls the
    model again, and its results — different ones here — are dropped by publishing id."""
    log = MemoryEventLog()
    topo = Topology(partitions=2)
    first = App("test", log, offsets=MemoryEventLog(), topology=topo)
    await first.create_streams()
    reservations = [reservation(i) for i in range(100)]
    await publish(first, reservations)
    down = {
        str(r.request_id): [CallError("UNAVAILABLE: down", retryable=True)] for r in reservations
    }
    register_inference(
        first, client=FakeModel(errors=down), options=FAST.model_copy(update={"attempts": 1})
    )
    await run_agent(first, 100)

    second = App("test", log, offsets=MemoryEventLog(), topology=topo)  # nothing committed
    healthy = FakeModel()
    register_inference(second, client=healthy, options=FAST)
    await run_until(second, ["inference"], lambda: len(healthy.calls) >= 100, timeout=20)
    found = await results(log, topo)
    assert len(found) == 100
    assert all(isinstance(e, InferenceFailed) and e.retryable for e in found)
