"""The runtime's semantics on the in-memory log (pure logic, no broker)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from events import InferenceRequested, RequestRejected, derive_id
from streams.agents.passthrough import register_passthrough
from streams.log import Position, read_until_tail
from streams.memory_log import MemoryEventLog
from streams.runtime import Ack, App, Retryable, Stream
from streams.runtime.deadletter import DeadLetter
from streams.runtime.worker import PartitionWorker
from streams.topics import Topology
from tests.runtime.helpers import publish, read_all, requests, run_until


@pytest.fixture
async def app() -> App:
    log = MemoryEventLog()
    app = App("test", log, topology=Topology(partitions=3))
    await app.create_streams()
    return app


def count_in(app: App, streams: list[str]) -> int:
    log = app.log
    assert isinstance(log, MemoryEventLog)
    return sum(len(log._streams[s]) for s in streams)


async def test_passthrough_emits_each_event_once(app: App) -> None:
    register_passthrough(app, app.topic(app.topology.requests), app.topic(app.topology.quota))
    events = requests(500)
    await publish(app.log, app, events)
    quota = app.topology.quota.streams
    await run_until(app, ["passthrough"], lambda: count_in(app, quota) >= 500)
    out = await read_all(app.log, quota)
    assert sorted(e.event_id for e in out) == sorted(e.event_id for e in events)
    # outputs land on the partition of their tenant
    for stream in quota:
        got = await read_all(app.log, [stream])
        assert {app.topology.quota.stream_for(e.tenant_id) for e in got} <= {stream}


async def test_a_crash_before_the_flush_neither_loses_nor_duplicates(app: App) -> None:
    """Kill the worker task at arbitrary points (no flush, no commit), restart, repeat."""
    register_passthrough(app, app.topic(app.topology.requests), app.topic(app.topology.quota))
    events = requests(3000)
    await publish(app.log, app, events)
    quota = app.topology.quota.streams
    for crash_after in (0.01, 0.02, 0.005):
        worker = PartitionWorker(app, app.agents["passthrough"], 0)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(crash_after)
        task.cancel()  # a crash: whatever was not flushed is lost
        with pytest.raises(asyncio.CancelledError):
            await task
    await run_until(app, ["passthrough"], lambda: count_in(app, quota) >= 3000)
    ids = Counter(e.event_id for e in await read_all(app.log, quota))
    assert len(ids) == 3000
    assert max(ids.values()) == 1


async def test_a_stateful_agent_replays_and_publishes_nothing_twice(app: App) -> None:
    """A REPLAY agent's state is a fold of its input; after a restart it continues."""
    out = app.topic(app.topology.quota)

    @app.agent(app.topic(app.topology.requests), ack=Ack.REPLAY)
    async def running_count(stream: Stream) -> None:
        seen: dict[str, int] = {}
        async for event in stream:
            seen[event.tenant_id] = seen.get(event.tenant_id, 0) + 1
            assert isinstance(event, InferenceRequested)
            out.emit(
                RequestRejected(
                    event_id=derive_id(event.event_id, "count"),
                    tenant_id=event.tenant_id,
                    request_id=event.request_id,
                    reason="invalid",
                    detail=str(seen[event.tenant_id]),
                    occurred_at=event.occurred_at,
                ),
                cause=event,
            )

    await publish(app.log, app, requests(300))
    quota = app.topology.quota.streams
    await run_until(app, ["running-count"], lambda: count_in(app, quota) >= 300)
    await publish(app.log, app, requests(300, start=300))
    await run_until(app, ["running-count"], lambda: count_in(app, quota) >= 600)
    got = await read_all(app.log, quota)
    assert len(got) == 600
    per_tenant: dict[str, list[int]] = {}
    for e in got:
        assert isinstance(e, RequestRejected)
        per_tenant.setdefault(e.tenant_id, []).append(int(e.detail))
    for counts in per_tenant.values():
        assert counts == list(range(1, len(counts) + 1))


async def test_undecodable_bytes_are_dead_lettered_and_the_agent_goes_on(app: App) -> None:
    register_passthrough(app, app.topic(app.topology.requests), app.topic(app.topology.quota))
    stream = app.topology.requests.stream(0)
    good = [e for e in requests(30) if app.topology.requests.stream_for(e.tenant_id) == stream]
    await publish(app.log, app, good[:2])
    await app.log.append(stream, [b"\x00garbage", b'{"type": "FromTheFuture", "version": 1}'])
    await publish(app.log, app, good[2:])
    quota = app.topology.quota.streams
    await run_until(app, ["passthrough"], lambda: count_in(app, quota) >= len(good))
    assert len(await read_all(app.log, quota)) == len(good)
    letters = [
        DeadLetter.decode(r.data)
        async for batch in read_until_tail(
            app.log, app.topology.deadletter.stream(0), Position.first()
        )
        for r in batch
    ]
    assert [(d.kind, d.stream, d.data) for d in letters] == [
        ("decode", stream, b"\x00garbage"),
        ("decode", stream, b'{"type": "FromTheFuture", "version": 1}'),
    ]
    assert "unknown event type 'FromTheFuture'" in letters[1].error


@pytest.mark.parametrize("batched", [False, True])
async def test_an_event_the_handler_fails_on_is_dead_lettered_alone(
    app: App, batched: bool
) -> None:
    out = app.topic(app.topology.quota)
    poison = uuid.UUID(int=7)

    def forward(event: InferenceRequested) -> None:
        if event.request_id == poison:
            raise ValueError("cannot handle request 7")
        out.emit(event.model_copy(update={"event_id": derive_id(event.event_id, "f")}), cause=event)

    @app.agent(app.topic(app.topology.requests), accepts=[InferenceRequested])
    async def picky(stream: Stream) -> None:
        if batched:
            async for batch in stream.take(50, within=0.01):
                for event in batch:
                    assert isinstance(event, InferenceRequested)
                    forward(event)
        else:
            async for event in stream:
                assert isinstance(event, InferenceRequested)
                forward(event)

    events = requests(60)
    await publish(app.log, app, events)
    quota = app.topology.quota.streams
    await run_until(app, ["picky"], lambda: count_in(app, quota) >= 59)
    got = Counter(
        e.request_id for e in await read_all(app.log, quota) if isinstance(e, InferenceRequested)
    )
    assert set(got) == {e.request_id for e in events} - {poison}
    assert max(got.values()) == 1
    letters = [
        DeadLetter.decode(r.data)
        async for b in read_until_tail(app.log, app.topology.deadletter.stream(0), Position.first())
        for r in b
    ]
    assert len(letters) == 1
    assert letters[0].kind == "handler"
    assert "cannot handle request 7" in letters[0].error


async def test_retryable_errors_are_retried_never_skipped(app: App) -> None:
    out = app.topic(app.topology.quota)
    failures = {"left": 3}

    @app.agent(app.topic(app.topology.requests))
    async def flaky(stream: Stream) -> None:
        async for event in stream:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise Retryable("the model server is restarting")
            out.emit(
                event.model_copy(update={"event_id": derive_id(event.event_id, "x")}), cause=event
            )

    await publish(app.log, app, requests(40))
    quota = app.topology.quota.streams
    await run_until(app, ["flaky"], lambda: count_in(app, quota) >= 40)
    assert len(await read_all(app.log, quota)) == 40
    letters = app.log
    assert isinstance(letters, MemoryEventLog)
    assert letters._streams[app.topology.deadletter.stream(0)] == []


async def test_take_batches_by_count_and_time(app: App) -> None:
    sizes: list[int] = []

    @app.agent(app.topic(app.topology.requests))
    async def batcher(stream: Stream) -> None:
        async for batch in stream.take(100, within=0.05):
            sizes.append(len(batch))
            assert all(isinstance(e, InferenceRequested) for e in batch)
            assert batch.positions

    one_partition = [
        e for e in requests(250) if app.topology.requests.stream_for(e.tenant_id).endswith("-0")
    ]
    await publish(app.log, app, one_partition)
    await run_until(app, ["batcher"], lambda: sum(sizes) >= len(one_partition))
    assert sum(sizes) == len(one_partition)
    assert max(sizes) <= 100


async def test_external_ack_resumes_where_the_agent_says(app: App) -> None:
    applied: dict[str, int] = {}
    seen: list[int] = []

    async def positions(partition: int) -> dict[str, int]:
        return dict(applied)

    @app.agent(app.topic(app.topology.requests), ack=Ack.EXTERNAL, positions=positions)
    async def projection(stream: Stream) -> None:
        async for batch in stream.take(10, within=0.01):
            for d in batch.deliveries:
                seen.append(d.offset)
            applied.update(batch.positions)

    stream = app.topology.requests.stream(0)
    await app.log.append(stream, [e.model_dump_json().encode() for e in requests(25)])
    await run_until(app, ["projection"], lambda: len(seen) >= 25)
    await app.log.append(stream, [e.model_dump_json().encode() for e in requests(5, start=25)])
    await run_until(app, ["projection"], lambda: len(seen) >= 30)
    assert seen == list(range(30))


async def test_emitting_without_a_delivered_cause_is_refused(app: App) -> None:
    out = app.topic(app.topology.quota)
    errors: list[str] = []

    @app.agent(app.topic(app.topology.requests))
    async def wrong(stream: Stream) -> None:
        async for event in stream:
            try:
                out.emit(event, cause=requests(1)[0])
            except ValueError as exc:
                errors.append(str(exc))

    await publish(app.log, app, requests(3))
    await run_until(app, ["wrong"], lambda: len(errors) >= 3)
    assert "cause of an emitted event" in errors[0]
