"""Every kind of call the API takes, with keys in every place a key can be: for checking
that no key ever reaches a log line."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import httpx

REQUEST = {"model": "echo", "prompt": "say nothing", "max_tokens": 4}


async def _wait_known(client: httpx.AsyncClient, tenant: str, key: dict[str, str]) -> None:
    """Until the tenant's key works and its quota is in the view (agents in other processes
    may still be starting)."""
    deadline = time.monotonic() + 60
    while (await client.get(f"/v1/tenants/{tenant}/quota", headers=key)).status_code != 200:
        assert time.monotonic() < deadline, f"{tenant}: key or quota never became known"
        await asyncio.sleep(0.2)


async def full_flow(client: httpx.AsyncClient, admin_key: str) -> list[str]:
    """Tenants, policies, prices, requests (good, bad, replayed, refused), reads, and keys
    where they do not belong; the tenant keys it made."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    keys: list[str] = []
    tenants = [f"logged-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for tenant in tenants:
        body = {"tenant_id": tenant, "name": tenant, "policy": {"token_budget": 10**9}}
        r = await client.post("/v1/admin/tenants", json=body, headers=admin)
        assert r.status_code == 201, r.text
        keys.append(r.json()["api_key"])
        assert (await client.post("/v1/admin/tenants", json=body, headers=admin)).status_code == 409
    mine, other = ({"Authorization": f"Bearer {k}"} for k in keys)
    await _wait_known(client, tenants[0], mine)
    await _wait_known(client, tenants[1], other)

    assert (await client.get("/v1/admin/tenants", headers=admin)).status_code == 200
    assert (await client.get(f"/v1/admin/tenants/{tenants[0]}", headers=admin)).status_code == 200
    policy = {"token_budget": 10**9, "tokens_per_minute": 10**6}
    path = f"/v1/admin/tenants/{tenants[0]}/policy"
    assert (await client.put(path, json=policy, headers=admin)).status_code == 202
    price = {"prompt_per_1k": "0.001", "completion_per_1k": "0.002"}
    assert (await client.put("/v1/admin/prices/echo", json=price, headers=admin)).status_code == 202

    r = await client.post("/v1/requests", json=REQUEST, headers=mine)
    assert r.status_code == 202, r.text
    rid = r.json()["request_id"]
    retry = {**mine, "Idempotency-Key": f"once-{uuid.uuid4().hex}"}
    for _ in range(2):
        assert (await client.post("/v1/requests", json=REQUEST, headers=retry)).status_code == 202
    changed = {**REQUEST, "max_tokens": 5}
    assert (await client.post("/v1/requests", json=changed, headers=retry)).status_code == 409
    bad: list[dict[str, object]] = [
        {**REQUEST, "max_tokens": -1},
        {**REQUEST, "model": "gpt-17"},
        {"prompt": keys[0]},
    ]
    for invalid in bad:
        assert (await client.post("/v1/requests", json=invalid, headers=mine)).status_code == 422
    raw = {**mine, "Content-Type": "application/json"}
    assert (await client.post("/v1/requests", content=b"{", headers=raw)).status_code == 400
    for read in (
        f"/v1/requests/{rid}",
        f"/v1/tenants/{tenants[0]}/quota",
        f"/v1/tenants/{tenants[0]}/usage",
        f"/v1/tenants/{tenants[0]}/invoices/2026-11",
    ):
        assert (await client.get(read, headers=mine)).status_code == 200, read
    # keys where they do not belong
    assert (await client.get(f"/v1/requests/{rid}", headers=other)).status_code == 404
    assert (await client.get(f"/v1/tenants/{tenants[0]}/quota", headers=other)).status_code == 404
    assert (await client.get("/v1/admin/tenants", headers=mine)).status_code == 403
    assert (await client.post("/v1/requests", json=REQUEST, headers=admin)).status_code == 403
    for header in (
        f"Bearer {keys[0]}x",
        f"Bearer {admin_key}x",
        f"Basic {base64.b64encode(f'{tenants[0]}:{keys[0]}'.encode()).decode()}",
        f"Token {keys[0]}",
        keys[0],
    ):
        r = await client.post("/v1/requests", json=REQUEST, headers={"Authorization": header})
        assert r.status_code == 401, header
        r = await client.get("/v1/admin/tenants", headers={"Authorization": header})
        assert r.status_code == 401, header
    return keys
