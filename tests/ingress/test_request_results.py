"""The request-results projection against the real Redis: first text wins, TTL, positions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from events import Event, InferenceCompleted, InferenceFailed
from projections.request_results import RequestResults
from quotaflow.settings import Settings

pytestmark = pytest.mark.services


def completed(rid: uuid.UUID, text: str) -> InferenceCompleted:
    return InferenceCompleted(
        tenant_id="t",
        request_id=rid,
        model="echo",
        prompt_tokens=3,
        completion_tokens=2,
        latency_ms=1.0,
        text=text,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


async def test_texts_are_kept_once_with_a_ttl(redis: Redis, unique: str) -> None:
    results = RequestResults(redis, f"{unique}:", ttl_s=60)
    try:
        a, b = uuid.uuid4(), uuid.uuid4()
        failed = InferenceFailed(tenant_id="t", request_id=b, model="echo", reason="boom")
        items: list[tuple[int, Event]] = [(0, completed(a, "first")), (1, failed)]
        assert await results.apply("r-0", items) == 1
        assert await results.apply("r-0", items) == 0
        assert await results.apply("r-0", [(4, completed(a, "second"))]) == 1
        got = await results.get(str(a))
        assert got is not None
        assert (got.text, got.tenant_id) == ("first", "t")
        assert (got.prompt_tokens, got.completion_tokens) == (3, 2)
        assert await results.get(str(b)) is None
        assert 0 < await redis.ttl(f"{unique}:res:r:{a}") <= 60
        assert await results.positions(["r-0", "r-1"]) == {"r-0": 4, "r-1": -1}
    finally:
        await results.clear()
    assert [k async for k in redis.scan_iter(match=f"{unique}:*")] == []
