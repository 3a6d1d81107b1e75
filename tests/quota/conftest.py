"""Fixtures: the real Redis, and a quota view under a key prefix of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from projections.quota_view import QuotaView
from quotaflow.settings import get_settings


def redis_client() -> Redis:
    return Redis.from_url(get_settings().redis_url)


def scratch_prefix() -> str:
    return f"qftest:{uuid.uuid4().hex[:12]}:"


async def leftover_keys(redis: Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=prefix + "*", count=1_000)]


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = redis_client()
    yield client
    await client.aclose()


@pytest.fixture
async def view(redis: Redis) -> AsyncIterator[QuotaView]:
    quota_view = QuotaView(redis, prefix=scratch_prefix())
    yield quota_view
    await quota_view.clear()
    assert await leftover_keys(redis, quota_view.prefix) == []
