"""The tenant directory projection against the real Redis: atomic, idempotent, rotation."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from events import Event, InferenceRequested, QuotaPolicy, QuotaPolicySet, TenantRegistered
from events.model import RequestSpec
from projections.tenant_directory import TenantDirectory
from quotaflow.settings import Settings

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def h(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def registered(tenant: str, key: str, budget: int = 100) -> TenantRegistered:
    return TenantRegistered(
        tenant_id=tenant,
        name=f"{tenant} inc",
        api_key_hash=h(key),
        policy=QuotaPolicy(token_budget=budget),
        occurred_at=T0,
    )


def request(tenant: str) -> InferenceRequested:
    return InferenceRequested(
        tenant_id=tenant,
        request_id=uuid.uuid4(),
        spec=RequestSpec(model="echo", prompt="x", max_tokens=1),
        estimated_prompt_tokens=1,
    )


@pytest.fixture
async def directory(unique: str, settings: Settings) -> AsyncIterator[TenantDirectory]:
    redis = Redis.from_url(settings.redis_url)
    d = TenantDirectory(redis, f"{unique}:")
    yield d
    await d.clear()
    assert [k async for k in redis.scan_iter(match=f"{unique}:*")] == []
    await redis.aclose()


async def test_keys_resolve_by_hash_and_policies_follow(directory: TenantDirectory) -> None:
    items: list[tuple[int, Event]] = [
        (0, registered("a", "key-a")),
        (1, request("a")),
        (2, registered("b", "key-b")),
        (5, QuotaPolicySet(tenant_id="a", policy=QuotaPolicy(token_budget=7), occurred_at=T0)),
    ]
    assert await directory.apply("s-0", items) == 3
    assert await directory.tenant_for_key(h("key-a")) == "a"
    assert await directory.tenant_for_key(h("key-b")) == "b"
    assert await directory.tenant_for_key("key-a") is None  # the raw key is not a key
    entry = await directory.tenant("a")
    assert entry is not None
    assert entry.policy.token_budget == 7
    assert entry.name == "a inc"
    assert [t.tenant_id for t in await directory.tenants()] == ["a", "b"]
    assert await directory.positions(["s-0", "s-1"]) == {"s-0": 5, "s-1": -1}


async def test_reapplying_changes_nothing(directory: TenantDirectory) -> None:
    items: list[tuple[int, Event]] = [
        (0, registered("a", "k1")),
        (1, QuotaPolicySet(tenant_id="a", policy=QuotaPolicy(token_budget=9), occurred_at=T0)),
        (2, registered("a", "k2")),
    ]
    await directory.apply("s-0", items)
    before = await directory.tenant("a")
    assert await directory.apply("s-0", items) == 0
    assert await directory.apply("s-0", items[1:]) == 0
    assert await directory.tenant("a") == before
    # a duplicated record of an old event (same event id, later offset) is skipped too
    assert await directory.apply("s-0", [(3, items[1][1])]) == 0
    assert await directory.positions(["s-0"]) == {"s-0": 3}
    assert await directory.tenant("a") == before


async def test_a_new_registration_rotates_the_key(directory: TenantDirectory) -> None:
    await directory.apply("s-0", [(0, registered("a", "old", 1)), (1, registered("a", "new", 2))])
    assert await directory.tenant_for_key(h("old")) is None
    assert await directory.tenant_for_key(h("new")) == "a"
    entry = await directory.tenant("a")
    assert entry is not None
    assert entry.policy.token_budget == 2


async def test_the_position_moves_past_other_events(directory: TenantDirectory) -> None:
    await directory.apply("s-0", [(0, request("a")), (1, request("a"))])
    assert await directory.positions(["s-0"]) == {"s-0": 1}
    await directory.apply("s-0", [], last=9)
    assert await directory.positions(["s-0"]) == {"s-0": 9}
    with pytest.raises(ValueError, match="increase"):
        await directory.apply("s-0", [(12, request("a")), (11, request("a"))])


async def test_a_policy_before_registration_does_not_make_a_tenant(
    directory: TenantDirectory,
) -> None:
    policy = QuotaPolicySet(tenant_id="z", policy=QuotaPolicy(token_budget=3), occurred_at=T0)
    await directory.apply("s-0", [(0, policy)])
    assert await directory.tenant("z") is None
    assert await directory.tenants() == []


async def test_an_unknown_key_is_503_until_the_directory_follows_every_partition(
    directory: TenantDirectory,
) -> None:
    """Before the directory agent caught up (or while it rebuilds after a lost store) an
    unknown key might belong to a tenant not applied yet: 503 and retry, not a 401."""
    from pydantic import SecretStr

    from streams.ingress.auth import Authenticator
    from streams.ingress.errors import ApiError

    auth = Authenticator(directory, SecretStr("admin"), cache_s=0, partitions=2)
    with pytest.raises(ApiError) as early:
        await auth.principal("qf_nobody")
    assert early.value.status == 503
    assert early.value.headers == {"Retry-After": "1"}
    await directory.caught_up("requests-0")  # no position stored: a lost store, not flagged
    with pytest.raises(ApiError) as lost:
        await auth.principal("qf_nobody")
    assert lost.value.status == 503
    await directory.caught_up("requests-0", empty=True)  # an empty stream has nothing to lose
    with pytest.raises(ApiError) as half:
        await auth.principal("qf_nobody")
    assert half.value.status == 503
    await directory.rebuilding("requests-1")
    await directory.apply("requests-1", [(0, registered("acme", "k1"))], caught_up=True)
    with pytest.raises(ApiError) as unknown:
        await auth.principal("qf_nobody")
    assert unknown.value.status == 401
    assert (await auth.principal("k1")).tenant_id == "acme"
