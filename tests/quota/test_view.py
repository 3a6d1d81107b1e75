"""The Redis quota view against the real Redis: atomic, idempotent, equal to the pure fold."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from events import (
    Event,
    InferenceRequested,
    QuotaPolicy,
    ReservationSettled,
    TokensReserved,
)
from projections.quota_view import QuotaView
from streams.quota import QuotaState, decide, evolve, tenant_quota
from streams.quota.timeline import from_us, to_us
from tests.quota.builder import TENANTS, UNKNOWN, Builder, build, scenarios
from tests.quota.conftest import leftover_keys, redis_client, scratch_prefix

pytestmark = pytest.mark.services

REQUESTS, QUOTA = "requests-0", "quota-0"
Items = list[tuple[int, Event]]


def agent(events: list[Event]) -> tuple[QuotaState, Items, Items]:
    """The quota agent over ``events``: its state, and both streams with offsets."""
    state = QuotaState()
    decisions: list[Event] = []
    for event in events:
        outs = decide(state, event)
        evolve(state, event)
        for out in outs:
            evolve(state, out)
        decisions += outs
    return state, list(enumerate(events)), list(enumerate(decisions))


def scenario() -> list[Event]:
    b = Builder(now=datetime(2025, 1, 31, 23, 59, 30, tzinfo=UTC))
    registered = b.register("acme", token_budget=1_000, tokens_per_minute=400, reservation_ttl_s=20)
    b.register("globex", token_budget=300, period="day", max_concurrent=2)
    for i in range(12):
        req = b.wait(4).request(("acme", "globex", UNKNOWN)[i % 3], prompt=10, max_tokens=90)
        if i % 4 == 0:
            b.wait(1).complete(req, prompt=10, completion=200)  # over-usage: clamped
        elif i % 4 == 1:
            b.fail(req)
    b.policy("acme", token_budget=2_000, period="day", requests_per_minute=3)
    b.again(registered)  # a duplicate of an older policy: ignored
    b.wait(30).tick()
    return b.events


def across_midnight() -> list[Event]:
    """Reservations of January settled in February, and February's own."""
    b = Builder(now=datetime(2025, 1, 31, 23, 59, 40, tzinfo=UTC))
    b.register("acme", token_budget=1_000, period="month")
    b.register("globex", token_budget=1_000, period="day", reservation_ttl_s=30)
    settled_in_january = b.request("acme", prompt=0, max_tokens=100)
    long_running = b.request("acme", prompt=0, max_tokens=100)  # open for over a minute
    b.wait(1).complete(settled_in_january, completion=60)
    january = [b.wait(1).request(t, prompt=0, max_tokens=100) for t in ("acme", "globex")]
    february = [b.wait(20).request(t, prompt=0, max_tokens=50) for t in ("acme", "globex")]
    for req in january:
        b.wait(1).complete(req, completion=70)
    b.wait(1).complete(february[0], completion=20)
    b.wait(90).request("globex", prompt=0, max_tokens=10)  # february[1] expires first
    b.complete(long_running, completion=100)
    b.request("acme", prompt=0, max_tokens=10)
    return b.events


def long_running() -> list[Event]:
    """A reservation open for longer than the rate window, closed after others left it."""
    b = Builder(now=datetime(2025, 5, 9, 12, 0, tzinfo=UTC))
    b.register("acme", token_budget=1_000, tokens_per_minute=500, reservation_ttl_s=600)
    slow = b.request("acme", prompt=0, max_tokens=100)
    quick = b.wait(1).request("acme", prompt=0, max_tokens=100)
    b.complete(quick, completion=10)
    b.wait(90).request("acme", prompt=0, max_tokens=50)
    b.wait(1).complete(slow, completion=80)
    b.wait(1).request("acme", prompt=0, max_tokens=50)
    b.wait(100).tick()
    b.request("acme", prompt=0, max_tokens=1)
    return b.events


@pytest.mark.parametrize("events", [scenario(), across_midnight(), long_running()])
async def test_the_view_equals_the_fold_after_every_event(
    view: QuotaView, events: list[Event]
) -> None:
    """Applied one event at a time, the view agrees with the agent's state at every step."""
    state, offset = QuotaState(), 0
    for i, event in enumerate(events):
        outs = decide(state, event)
        evolve(state, event)
        for out in outs:
            evolve(state, out)
        await view.apply(REQUESTS, [(i, event)])
        for out in outs:
            await view.apply(QUOTA, [(offset, out)])
            offset += 1
        await assert_matches_fold(view, state, from_us(state.now))


@pytest.mark.parametrize("events", [across_midnight(), long_running()])
async def test_every_split_in_two_batches_gives_the_same_view(
    redis: Redis, events: list[Event]
) -> None:
    state, requests, quota = agent(events)
    whole = QuotaView(redis, prefix=scratch_prefix())
    try:
        await whole.apply(REQUESTS, requests)
        await whole.apply(QUOTA, quota)
        expected = await whole.snapshot()
        for k in range(len(quota) + 1):
            split = QuotaView(redis, prefix=scratch_prefix())
            try:
                await split.apply(REQUESTS, requests)
                await split.apply(QUOTA, quota[:k])
                await split.apply(QUOTA, quota[k:])
                assert await split.snapshot() == expected
                await assert_matches_fold(split, state, from_us(state.now))
            finally:
                await split.clear()
    finally:
        await whole.clear()


async def test_many_entries_leave_the_window_at_once(view: QuotaView) -> None:
    b = Builder()
    b.register("acme", token_budget=10**6)
    early = [b.request("acme", prompt=0, max_tokens=5) for _ in range(300)]
    for req in early[:-1]:
        b.complete(req, completion=1)
    late = b.wait(61).request("acme", prompt=0, max_tokens=5)
    b.wait(1).request("acme", prompt=0, max_tokens=5)
    state, requests, quota = agent(b.events)
    await view.apply(REQUESTS, requests)
    await view.apply(QUOTA, quota[:-2])
    await view.apply(QUOTA, quota[-2:-1])  # drops 300 entries from the window
    await view.apply(QUOTA, quota[-1:])
    await assert_matches_fold(view, state, from_us(state.now))
    acme = (await view.snapshot())["tenants"]["acme"]
    assert set(acme["window"]) == {late.request_id.hex, b.requests[-1].request_id.hex}
    assert set(acme["reservations"]) == set(acme["window"]) | {early[-1].request_id.hex}
    assert acme["quota"]["wmin"] == to_us(late.occurred_at)


async def test_usage_is_charged_to_the_period_of_the_reservation(view: QuotaView) -> None:
    state, requests, quota = agent(across_midnight())
    await view.apply(REQUESTS, requests)
    await view.apply(QUOTA, quota)
    await assert_matches_fold(view, state, from_us(state.now))
    acme, globex = await view.tenant("acme"), await view.tenant("globex")
    assert acme is not None
    assert globex is not None
    assert (acme.used, acme.reserved, acme.open_reservations) == (20, 10, 1)
    assert (globex.used, globex.reserved, globex.open_reservations) == (0, 10, 1)


async def test_the_view_clamps_over_usage_like_the_fold(view: QuotaView) -> None:
    """A settlement reporting more than was reserved (not one decide writes) is clamped."""
    b = Builder()
    b.register("acme", token_budget=1_000)
    b.request("acme", prompt=0, max_tokens=100)
    state, requests, quota = agent(b.events)
    reserved = quota[0][1]
    assert isinstance(reserved, TokensReserved)
    over = ReservationSettled(
        tenant_id="acme",
        occurred_at=reserved.occurred_at,
        request_id=reserved.request_id,
        model="smollm2",
        reserved=100,
        prompt_tokens=50,
        completion_tokens=500,
    )
    evolve(state, over)
    await view.apply(REQUESTS, requests)
    await view.apply(QUOTA, [*quota, (1, over)])
    await assert_matches_fold(view, state, from_us(state.now))
    acme = await view.tenant("acme")
    assert acme is not None
    assert (acme.used, acme.window_tokens) == (100, 100)


async def test_the_view_forgets_closed_reservations_that_left_the_window(
    view: QuotaView,
) -> None:
    _, requests, quota = agent(across_midnight())
    await view.apply(REQUESTS, requests)
    await view.apply(QUOTA, quota)
    snapshot = await view.snapshot()
    kept = {t: set(v["reservations"]) for t, v in snapshot["tenants"].items()}
    window = {t: set(v["window"]) for t, v in snapshot["tenants"].items()}
    last = {
        e.tenant_id: {e.request_id.hex}
        for _, e in requests[-3:]
        if isinstance(e, InferenceRequested)
    }
    assert kept == last
    assert window == kept


async def assert_matches_fold(view: QuotaView, state: QuotaState, at: datetime) -> None:
    for tenant in (*TENANTS, UNKNOWN):
        assert await view.tenant(tenant, at) == tenant_quota(state, tenant, at)


async def test_the_view_equals_the_pure_fold(view: QuotaView) -> None:
    state, requests, quota = agent(scenario())
    assert await view.apply(REQUESTS, requests) == len(requests)
    assert await view.apply(QUOTA, quota) == len(quota)
    now = from_us(state.now)
    await assert_matches_fold(view, state, now)
    await assert_matches_fold(view, state, now + timedelta(seconds=45))
    acme = await view.tenant("acme")
    assert acme is not None
    assert acme.period == "day"
    assert acme.requests_per_minute == 3


async def test_reapplying_overlapping_batches_changes_nothing(view: QuotaView) -> None:
    _, requests, quota = agent(scenario())
    await view.apply(REQUESTS, requests)
    assert await view.apply(QUOTA, quota[:10]) == 10
    before = await view.snapshot()
    assert await view.apply(QUOTA, quota[:10]) == 0
    assert await view.apply(QUOTA, quota[3:7]) == 0
    assert await view.snapshot() == before
    assert await view.apply(QUOTA, quota[5:15]) == 5
    assert await view.apply(QUOTA, quota) == len(quota) - 15
    assert await view.apply(REQUESTS, requests) == 0
    assert await view.positions([REQUESTS, QUOTA, "quota-9"]) == {
        REQUESTS: len(requests) - 1,
        QUOTA: len(quota) - 1,
        "quota-9": -1,
    }


async def test_small_chunks_give_the_same_view(redis: Redis) -> None:
    _, requests, quota = agent(scenario())
    whole = QuotaView(redis, prefix=scratch_prefix())
    chunked = QuotaView(redis, prefix=scratch_prefix(), chunk=3)
    try:
        for v in (whole, chunked):
            await v.apply(QUOTA, quota)
            await v.apply(REQUESTS, requests)
        assert await whole.snapshot() == await chunked.snapshot()
    finally:
        await whole.clear()
        await chunked.clear()


async def test_offsets_must_increase(view: QuotaView) -> None:
    _, requests, _ = agent(scenario())
    with pytest.raises(ValueError, match="increase"):
        await view.apply(REQUESTS, [requests[1], requests[0]])
    assert await view.apply(REQUESTS, []) == 0


async def test_clear_deletes_only_its_own_prefix(redis: Redis) -> None:
    base = scratch_prefix()
    outer, inner = QuotaView(redis, prefix=base), QuotaView(redis, prefix=base + "scratch:")
    _, requests, quota = agent(scenario())
    try:
        for v in (outer, inner):
            await v.apply(REQUESTS, requests)
            await v.apply(QUOTA, quota)
        kept = await inner.snapshot()
        await outer.clear()
        assert await outer.snapshot() == {"positions": {}, "tenants": {}}
        assert await inner.snapshot() == kept
    finally:
        await inner.clear()
        await outer.clear()
    assert await leftover_keys(redis, base) == []


async def test_a_tenant_the_view_has_no_policy_for_reads_as_none(view: QuotaView) -> None:
    b = Builder()
    b.register("acme", QuotaPolicy(token_budget=10))
    b.request("acme", prompt=0, max_tokens=5)
    _, requests, quota = agent(b.events)
    await view.apply(QUOTA, quota)
    assert await view.tenant("acme") is None
    await view.apply(REQUESTS, requests)
    acme = await view.tenant("acme")
    assert acme is not None
    assert (acme.budget, acme.reserved, acme.remaining) == (10, 5, 5)
    with pytest.raises(ValueError, match="moved past"):
        await view.tenant("acme", b.now - timedelta(days=400))


def _batches(items: Items, cuts: list[int]) -> list[Items]:
    bounds = [0, *sorted({c % (len(items) + 1) for c in cuts}), len(items)]
    return [items[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=60, deadline=None)
@given(scenarios, st.data())
def test_a_view_built_in_random_batches_equals_one_built_at_once(
    case: tuple[list[QuotaPolicy], list[tuple[Any, ...]]], data: st.DataObject
) -> None:
    """Random splits of both streams, random interleaving, random re-application."""
    state, requests, quota = agent(build(*case))
    streams = {REQUESTS: requests, QUOTA: quota}
    plan: list[tuple[str, Items]] = []
    for name, items in streams.items():
        cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=6), label=f"cuts {name}")
        plan += [(name, batch) for batch in _batches(items, cuts)]
    order = data.draw(st.permutations(range(len(plan))), label="order")
    # batches of one stream stay in order; a stream's batches interleave with the other's
    queues = {name: [batch for n, batch in plan if n == name] for name in streams}
    steps = [n for n, _ in (plan[i] for i in order)]
    replays = data.draw(st.lists(st.integers(0, 50), max_size=3), label="replays")
    asyncio.run(_compare(state, streams, queues, steps, replays))


async def _compare(
    state: QuotaState,
    streams: dict[str, Items],
    queues: dict[str, list[Items]],
    steps: list[str],
    replays: list[int],
) -> None:
    redis = redis_client()
    rebuilt = QuotaView(redis, prefix=scratch_prefix())
    incremental = QuotaView(redis, prefix=scratch_prefix())
    try:
        for name in (QUOTA, REQUESTS):
            await rebuilt.apply(name, streams[name])
        done: list[tuple[str, Items]] = []
        for name in steps:
            batch = queues[name].pop(0)
            assert await incremental.apply(name, batch) == len(batch)
            done.append((name, batch))
            for r in replays:  # an earlier batch again, as after a crash before the ack
                again_name, again = done[r % len(done)]
                assert await incremental.apply(again_name, again) == 0
        assert await incremental.snapshot() == await rebuilt.snapshot()
        await assert_matches_fold(incremental, state, from_us(state.now))
    finally:
        await rebuilt.clear()
        await incremental.clear()
        await redis.aclose()
