"""Keys: tenant keys see only their tenant, the admin key alone opens the admin routes."""

from __future__ import annotations

import logging
import uuid

import pytest
import pytest_asyncio

from tests.ingress.harness import ADMIN_KEY, Deployment

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

BODY = {"model": "echo", "prompt": "hi", "max_tokens": 4}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenants(env: Deployment) -> tuple[dict[str, str], dict[str, str]]:
    a = await env.create_tenant("alpha", token_budget=100_000)
    b = await env.create_tenant("beta", token_budget=100_000)
    return a, b


async def test_no_key_or_an_unknown_key_is_401(
    env: Deployment, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        r = await env.client.post("/v1/requests", json=BODY, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await env.client.get("/v1/tenants/alpha/quota", headers=headers)).status_code == 401


async def test_a_tenant_key_sees_only_its_own_tenant(
    env: Deployment, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    a, b = tenants
    assert (await env.client.post("/v1/requests", json=BODY, headers=b)).status_code == 202
    r = await env.client.post("/v1/requests", json=BODY, headers=a)
    assert r.status_code == 202
    rid = r.json()["request_id"]
    for path in (
        "/v1/tenants/beta/quota",
        "/v1/tenants/beta/usage",
        "/v1/tenants/beta/invoices/2026-11",
        "/v1/tenants/nosuch/quota",
    ):
        got = await env.client.get(path, headers=a)
        assert got.status_code == 404, path
        assert got.json() == {
            "error": {"code": "not_found", "message": "tenant not found", "details": None}
        }
    # beta cannot read alpha's request; alpha can
    assert (await env.client.get(f"/v1/requests/{rid}", headers=b)).status_code == 404
    assert (await env.client.get(f"/v1/requests/{rid}", headers=a)).status_code == 200
    assert (await env.client.get("/v1/tenants/alpha/quota", headers=a)).status_code == 200


async def test_admin_routes_refuse_tenant_keys(
    env: Deployment, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    a, _ = tenants
    calls = [
        ("GET", "/v1/admin/tenants", None),
        ("GET", "/v1/admin/tenants/alpha", None),
        (
            "POST",
            "/v1/admin/tenants",
            {"tenant_id": "x", "name": "x", "policy": {"token_budget": 1}},
        ),
        ("PUT", "/v1/admin/tenants/alpha/policy", {"token_budget": 10**9}),
        ("PUT", "/v1/admin/prices/echo", {"prompt_per_1k": "1", "completion_per_1k": "1"}),
    ]
    for method, path, body in calls:
        r = await env.client.request(method, path, json=body, headers=a)
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["code"] == "forbidden"


async def test_the_admin_key_reads_any_tenant_but_submits_nothing(
    env: Deployment, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    assert (await env.client.get("/v1/tenants/beta/quota", headers=env.admin)).status_code == 200
    r = await env.client.post("/v1/requests", json=BODY, headers=env.admin)
    assert r.status_code == 403


async def test_keys_are_never_logged(
    env: Deployment,
    tenants: tuple[dict[str, str], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _ = tenants
    secret = a["Authorization"].removeprefix("Bearer ")
    with caplog.at_level(logging.DEBUG):
        await env.client.post("/v1/requests", json=BODY, headers=a)
        await env.client.get(f"/v1/requests/{uuid.uuid4()}", headers=a)
        await env.client.post("/v1/requests", json={"bad": 1}, headers=a)
        await env.client.get("/v1/admin/tenants", headers=env.admin)
        await env.client.get("/v1/admin/tenants", headers={"Authorization": "Bearer wrong"})
    text = caplog.text
    assert secret not in text
    assert ADMIN_KEY not in text
    assert "wrong" not in text
