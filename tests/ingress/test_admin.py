"""Admin routes: each write appends an event; the views follow."""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal

import pytest

from events import PriceSet, QuotaPolicySet, TenantRegistered, decode
from streams.log import Position, read_until_tail
from tests.ingress.harness import Deployment

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]


async def events_of(env: Deployment, stream: str) -> list[object]:
    out: list[object] = []
    async for records in read_until_tail(env.log, stream, Position.first()):
        out.extend(decode(r.data) for r in records)
    return out


async def test_creating_a_tenant_appends_its_key_hash_and_the_key_works_at_once(
    env: Deployment,
) -> None:
    body = {"tenant_id": "newco", "name": "New Co", "policy": {"token_budget": 5000}}
    r = await env.client.post("/v1/admin/tenants", json=body, headers=env.admin)
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["api_key"]
    assert created["active"] is True
    assert created["tenant_id"] == "newco"
    registered = [
        e
        for e in await events_of(env, env.topology.requests.stream_for("newco"))
        if isinstance(e, TenantRegistered) and e.tenant_id == "newco"
    ]
    assert len(registered) == 1
    assert registered[0].api_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in registered[0].model_dump_json()
    headers = {"Authorization": f"Bearer {key}"}
    ok = await env.client.post(
        "/v1/requests", json={"model": "echo", "prompt": "x", "max_tokens": 1}, headers=headers
    )
    assert ok.status_code == 202, ok.text
    again = await env.client.post("/v1/admin/tenants", json=body, headers=env.admin)
    assert again.status_code == 409


async def test_list_and_get_tenants(env: Deployment) -> None:
    await env.create_tenant("listed-1", token_budget=1)
    await env.create_tenant("listed-2", token_budget=2)
    r = await env.client.get("/v1/admin/tenants", headers=env.admin)
    assert r.status_code == 200
    names = {t["tenant_id"]: t for t in r.json()["tenants"]}
    assert {"listed-1", "listed-2"} <= set(names)
    assert names["listed-2"]["policy"]["token_budget"] == 2
    one = await env.client.get("/v1/admin/tenants/listed-1", headers=env.admin)
    assert one.json()["name"] == "Tenant listed-1"
    assert (await env.client.get("/v1/admin/tenants/none", headers=env.admin)).status_code == 404


async def test_setting_a_policy_appends_quota_policy_set(env: Deployment) -> None:
    key = await env.create_tenant("grow", token_budget=10)
    body = {"model": "echo", "prompt": "x", "max_tokens": 100}
    assert (await env.client.post("/v1/requests", json=body, headers=key)).status_code == 429
    r = await env.client.put(
        "/v1/admin/tenants/grow/policy", json={"token_budget": 1_000_000}, headers=env.admin
    )
    assert r.status_code == 202, r.text
    sets = [
        e
        for e in await events_of(env, env.topology.requests.stream_for("grow"))
        if isinstance(e, QuotaPolicySet) and e.tenant_id == "grow"
    ]
    assert [str(e.event_id) for e in sets] == [r.json()["event_id"]]
    assert (await env.client.post("/v1/requests", json=body, headers=key)).status_code == 202
    for _ in range(100):
        t = (await env.client.get("/v1/admin/tenants/grow", headers=env.admin)).json()
        if t["policy"]["token_budget"] == 1_000_000:
            break
        await asyncio.sleep(0.05)
    assert t["policy"]["token_budget"] == 1_000_000
    missing = await env.client.put(
        "/v1/admin/tenants/ghost/policy", json={"token_budget": 1}, headers=env.admin
    )
    assert missing.status_code == 404


async def test_setting_a_price_appends_price_set_to_the_catalog(env: Deployment) -> None:
    r = await env.client.put(
        "/v1/admin/prices/echo",
        json={"prompt_per_1k": "0.0005", "completion_per_1k": 0.0015},
        headers=env.admin,
    )
    assert r.status_code == 202, r.text
    prices = [
        e for e in await events_of(env, env.topology.catalog.stream(0)) if isinstance(e, PriceSet)
    ]
    assert len(prices) == 1
    assert (prices[0].model, prices[0].tenant_id) == ("echo", "system")
    assert prices[0].prompt_per_1k == Decimal("0.0005")
    assert prices[0].completion_per_1k == Decimal("0.0015")
    bad = await env.client.put(
        "/v1/admin/prices/echo",
        json={"prompt_per_1k": -1, "completion_per_1k": 1},
        headers=env.admin,
    )
    assert bad.status_code == 422


async def test_the_system_tenant_cannot_be_created(env: Deployment) -> None:
    body = {"tenant_id": "system", "name": "x", "policy": {"token_budget": 1}}
    r = await env.client.post("/v1/admin/tenants", json=body, headers=env.admin)
    assert r.status_code == 422
