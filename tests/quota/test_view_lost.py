"""A Redis view emptied under its projection is noticed and rebuilt, never silently patched.

Each view refuses a batch when its stored position is below what the process saw stored
(``projections.view_guard``); the agent then restarts from the positions the store holds, which
for an emptied store is the start of the log.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from events import Event, InferenceCompleted
from projections.quota_view import QuotaView
from projections.request_results import RequestResults
from projections.tenant_directory import TenantDirectory
from projections.view_guard import ViewLost
from streams.quota import QuotaState, tenant_quota
from streams.runtime.errors import is_retryable
from tests.quota.builder import Builder
from tests.quota.conftest import leftover_keys, scratch_prefix
from tests.quota.test_view import agent

pytestmark = pytest.mark.services

REQUESTS, QUOTA = "requests-0", "quota-0"


async def flush(redis: Redis, prefix: str) -> None:
    keys = await leftover_keys(redis, prefix)
    assert keys, "nothing to flush"
    await redis.unlink(*keys)


def decided(events: list[Event]) -> tuple[QuotaState, list[Event]]:
    state, _, decisions = agent(events)
    return state, [event for _, event in decisions]


async def test_the_quota_view_refuses_to_go_on_after_a_flush_and_rebuilds(
    view: QuotaView, redis: Redis
) -> None:
    b = Builder(now=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    b.register("acme", token_budget=1_000)
    for _ in range(5):
        b.wait(1).complete(b.request("acme", prompt=10, max_tokens=50), completion=20)
    state, decisions = decided(b.events)
    half = len(b.events) // 2
    await view.positions([REQUESTS, QUOTA])  # what an agent does when it starts
    await view.apply(REQUESTS, list(enumerate(b.events))[:half])
    await view.apply(QUOTA, list(enumerate(decisions)))

    await flush(redis, view.prefix)
    with pytest.raises(ViewLost) as lost:
        await view.apply(REQUESTS, list(enumerate(b.events))[half:])
    assert is_retryable(lost.value)  # the agent restarts instead of dead-lettering
    assert await leftover_keys(redis, view.prefix) == []  # nothing was written

    # the restart: positions from the store (-1: the start of the log), then the replay
    assert await view.positions([REQUESTS, QUOTA]) == {REQUESTS: -1, QUOTA: -1}
    await view.apply(REQUESTS, list(enumerate(b.events)))
    await view.apply(QUOTA, list(enumerate(decisions)))
    at = b.now
    assert await view.tenant("acme", at) == tenant_quota(state, "acme", at)


async def test_the_directory_and_the_results_notice_a_flush(redis: Redis) -> None:
    prefix = scratch_prefix()
    b = Builder(now=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    b.register("acme", token_budget=1_000)
    rid = uuid.uuid4()
    done = InferenceCompleted(
        tenant_id="acme",
        request_id=rid,
        model="echo",
        prompt_tokens=1,
        completion_tokens=1,
        latency_ms=1.0,
        text="hi",
    )
    directory, results = TenantDirectory(redis, prefix), RequestResults(redis, prefix)
    try:
        for projection, events in ((directory, b.events), (results, [done])):
            await projection.positions([REQUESTS])
            await projection.apply(REQUESTS, list(enumerate(events)))
        await flush(redis, prefix)
        for projection, events in ((directory, b.events), (results, [done])):
            with pytest.raises(ViewLost):
                await projection.apply(REQUESTS, [(len(events), events[-1])])
            assert await projection.positions([REQUESTS]) == {REQUESTS: -1}
            await projection.apply(REQUESTS, list(enumerate(events)))
        assert [t.tenant_id for t in await directory.tenants()] == ["acme"]
        result = await results.get(str(rid))
        assert result is not None
        assert result.text == "hi"
    finally:
        await directory.clear()
        await results.clear()


def test_token_metrics_count_each_decision_once_per_process() -> None:
    """A rebuild replays decisions the process counted already: only the new ones count."""
    from streams.agents.quota_view import QuotaViewStore

    store = QuotaViewStore("redis://unused", "x:")
    b = Builder(now=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    b.register("acme", token_budget=1_000)
    for _ in range(4):
        b.request("acme", prompt=1, max_tokens=9)
    _, decisions = decided(b.events)
    items = list(enumerate(decisions))
    assert store.first_time({QUOTA: items[:3]}) == decisions[:3]
    assert store.first_time({QUOTA: items}) == decisions[3:]  # the replay after a rebuild
    assert store.first_time({QUOTA: items}) == []
