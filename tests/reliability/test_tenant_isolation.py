"""A tenant's key reaches only its own tenant, through every route the API has.

The routes come from the API's own ``/openapi.json``; each must be in :data:`ROUTES`, which
says how to check it, so a route added later fails :func:`test_every_route_is_checked`
until someone decides how it is protected. Then, for every route (and every HTTP method on
its path): tenant A's key on tenant B is a 403/404 that says nothing about B, the admin
routes refuse tenant keys (401 without a key), and nothing was changed by the refused calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import httpx
import pytest
import pytest_asyncio

from events import PriceSet, decode
from streams.log import Position, read_until_tail
from tests.ingress.harness import Deployment

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

Kind = Literal["tenant", "admin", "request", "submit", "public"]
#: Every operation of the API and what protects it:
#: tenant: a tenant key reads only its own {tenant} (else 404); admin: the admin key only;
#: request: a request is visible to its tenant only (else 404); submit: the tenant is the
#: key's; public: no key, no tenant data.
ROUTES: dict[tuple[str, str], Kind] = {
    ("POST", "/v1/requests"): "submit",
    ("GET", "/v1/requests/{request_id}"): "request",
    ("GET", "/v1/tenants/{tenant}/quota"): "tenant",
    ("GET", "/v1/tenants/{tenant}/usage"): "tenant",
    ("GET", "/v1/tenants/{tenant}/invoices/{period}"): "tenant",
    ("GET", "/v1/admin/tenants"): "admin",
    ("POST", "/v1/admin/tenants"): "admin",
    ("GET", "/v1/admin/tenants/{tenant}"): "admin",
    ("PUT", "/v1/admin/tenants/{tenant}/policy"): "admin",
    ("PUT", "/v1/admin/prices/{model}"): "admin",
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "public",
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BUDGET_B = 7_654_321  # a figure only tenant B's answers contain
PRICE = "0.123456789"  # a price no refused call may set
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/requests"): {"model": "echo", "prompt": "mine", "max_tokens": 4},
    ("POST", "/v1/admin/tenants"): {
        "tenant_id": "iso-intruder",
        "name": "made by a tenant key",
        "policy": {"token_budget": 10**12},
    },
    ("PUT", "/v1/admin/tenants/{tenant}/policy"): {"token_budget": 10**12},
    ("PUT", "/v1/admin/prices/{model}"): {"prompt_per_1k": PRICE, "completion_per_1k": PRICE},
}


@dataclass(frozen=True)
class Tenants:
    a: str
    b: str
    a_key: dict[str, str]
    b_key: dict[str, str]
    b_request: str  # one of B's requests

    def secrets_of_b(self) -> list[str]:
        return [self.b, self.b_request, str(BUDGET_B), self.b_key["Authorization"][7:]]


def path_for(template: str, tenants: Tenants, victim: str) -> str:
    values = {"tenant": victim, "request_id": tenants.b_request, "period": "2026-11"}
    values["model"] = "echo"
    path = template
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {template}: add one to path_for"
    return path


def operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for path, item in openapi["paths"].items():
        for method in item:
            yield method.upper(), path


def leaked(r: httpx.Response, tenants: Tenants) -> list[str]:
    return [s for s in tenants.secrets_of_b() if s in r.text]


async def until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenants(env: Deployment) -> Tenants:
    a_key = await env.create_tenant("iso-alpha", token_budget=10**9)
    b_key = await env.create_tenant("iso-bravo", token_budget=BUDGET_B)
    r = await env.client.post("/v1/requests", json=BODIES[("POST", "/v1/requests")], headers=b_key)
    assert r.status_code == 202, r.text
    found = Tenants("iso-alpha", "iso-bravo", a_key, b_key, r.json()["request_id"])

    async def billed() -> bool:  # B's request is in the billing view, not only in a cache
        got = await env.client.get(f"/v1/requests/{found.b_request}", headers=b_key)
        return got.status_code == 200 and got.json()["model"] == "echo"

    await until(billed)
    return found


async def test_every_route_is_checked(env: Deployment) -> None:
    r = await env.client.get("/openapi.json")
    assert r.status_code == 200
    found = set(operations(r.json()))
    unknown = sorted(found - set(ROUTES))
    assert not unknown, f"new routes: say how each is protected in ROUTES: {unknown}"
    assert sorted(set(ROUTES) - found) == [], "routes gone: remove them from ROUTES"
    for (method, path), kind in ROUTES.items():
        if "{tenant}" in path:
            assert kind in ("tenant", "admin"), (method, path)
        if path.startswith("/v1/admin"):
            assert kind == "admin", (method, path)


@pytest.mark.parametrize("template", sorted({p for _, p in ROUTES if "{tenant}" in p}))
async def test_a_tenant_key_gets_nothing_of_another_tenant(
    env: Deployment, tenants: Tenants, template: str
) -> None:
    kinds = {k for (_, p), k in ROUTES.items() if p == template}
    declared = {m for (m, p) in ROUTES if p == template}
    own = path_for(template, tenants, tenants.b)
    variants = [own, own.replace(tenants.b, tenants.b.upper()), own.replace("iso-", "%69so-")]
    for method in METHODS:
        body = BODIES.get((method, template))
        for path in variants:
            r = await env.client.request(method, path, json=body, headers=tenants.a_key)
            assert not 200 <= r.status_code < 300, (method, path, r.status_code, r.text)
            assert leaked(r, tenants) == [], (method, path, r.text)
            if method not in declared:
                assert r.status_code == 405, (method, path, r.status_code)
            elif kinds == {"tenant"}:
                assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), r.text
                # the route matched and refused (an unmatched path is a 404 too)
                assert path != own or r.json()["error"]["message"] == "tenant not found"
            else:
                assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), r.text
    # the same reads work for B's own key (tenant routes) and the admin key: the 404s above
    # are the isolation, not a broken route
    for method in declared:
        if method == "GET":
            key = tenants.b_key if kinds == {"tenant"} else env.admin
            r = await env.client.get(own, headers=key)
            assert r.status_code == 200, (own, r.text)
            assert tenants.b in r.text


@pytest.mark.parametrize("route", sorted(r for r, k in ROUTES.items() if k == "admin"))
async def test_admin_routes_refuse_tenant_keys(
    env: Deployment, tenants: Tenants, route: tuple[str, str]
) -> None:
    method, template = route
    body = BODIES.get(route)
    for victim in (tenants.a, tenants.b):
        path = path_for(template, tenants, victim)
        for key in (tenants.a_key, tenants.b_key):
            r = await env.client.request(method, path, json=body, headers=key)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), r.text
        r = await env.client.request(method, path, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized"), r.text
        r = await env.client.request(method, path, json=body, headers={"Authorization": "Bearer x"})
        assert r.status_code == 401, r.text


async def test_refused_calls_changed_nothing(env: Deployment, tenants: Tenants) -> None:
    """After every refused admin call above: no tenant made, no policy or price set."""
    for route in sorted(r for r, k in ROUTES.items() if k == "admin"):
        path = path_for(route[1], tenants, tenants.b)
        r = await env.client.request(route[0], path, json=BODIES.get(route), headers=tenants.a_key)
        assert r.status_code == 403
    listed = (await env.client.get("/v1/admin/tenants", headers=env.admin)).json()["tenants"]
    assert {t["tenant_id"] for t in listed} >= {tenants.a, tenants.b}
    assert "iso-intruder" not in {t["tenant_id"] for t in listed}
    b = (await env.client.get(f"/v1/admin/tenants/{tenants.b}", headers=env.admin)).json()
    assert b["policy"]["token_budget"] == BUDGET_B
    quota = (await env.client.get(f"/v1/tenants/{tenants.b}/quota", headers=tenants.b_key)).json()
    assert quota["budget"] == BUDGET_B
    prices = []
    catalog = env.topology.catalog.stream(0)
    async for records in read_until_tail(env.log, catalog, Position.first()):
        prices += [e for e in map(decode, (r.data for r in records)) if isinstance(e, PriceSet)]
    assert Decimal(PRICE) not in {p.prompt_per_1k for p in prices}


async def test_another_tenants_request_is_404(env: Deployment, tenants: Tenants) -> None:
    path = f"/v1/requests/{tenants.b_request}"
    r = await env.client.get(path, headers=tenants.a_key)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert leaked(r, tenants) == []
    # also while the request is only known from its quota decision (before the billing view)
    for _ in range(5):
        fresh = await env.client.post(
            "/v1/requests", json=BODIES[("POST", "/v1/requests")], headers=tenants.b_key
        )
        assert fresh.status_code == 202
        rid = fresh.json()["request_id"]
        r = await env.client.get(f"/v1/requests/{rid}", headers=tenants.a_key)
        assert r.status_code == 404, r.text
        assert rid not in r.text
        assert (
            await env.client.get(f"/v1/requests/{rid}", headers=tenants.b_key)
        ).status_code == 200


async def test_a_request_belongs_to_the_key_that_sent_it(env: Deployment, tenants: Tenants) -> None:
    body = BODIES[("POST", "/v1/requests")]
    r = await env.client.post(
        "/v1/requests", json={**body, "tenant_id": tenants.b}, headers=tenants.a_key
    )
    assert r.status_code == 422, r.text
    r = await env.client.post("/v1/requests", json=body, headers=tenants.a_key)
    assert r.status_code == 202, r.text
    rid = r.json()["request_id"]
    mine = await env.client.get(f"/v1/requests/{rid}", headers=tenants.a_key)
    assert mine.status_code == 200
    assert mine.json()["tenant_id"] == tenants.a
    assert (await env.client.get(f"/v1/requests/{rid}", headers=tenants.b_key)).status_code == 404


#: Per-tenant series of the agents (KEDA scales inference on them). The harness runs the
#: agents in the API's process, so its /metrics has them; `quotaflow serve` alone has none
#: (tests/reliability/test_secrets_in_logs.py reads a served /metrics).
AGENT_SERIES = ("quotaflow_tokens_", "quotaflow_requests_decided_")


@pytest.mark.parametrize("path", sorted(p for (_, p), k in ROUTES.items() if k == "public"))
async def test_public_routes_hold_no_tenant_data(
    env: Deployment, tenants: Tenants, path: str
) -> None:
    for headers in ({}, tenants.a_key):
        r = await env.client.get(path, headers=headers)
        assert r.status_code == 200, r.text
        lines = [
            line
            for line in r.text.splitlines()
            if not (path == "/metrics" and line.startswith(AGENT_SERIES))
        ]
        text = "\n".join(lines)
        assert [s for s in [*tenants.secrets_of_b(), tenants.a] if s in text] == []
        assert tenants.b_key["Authorization"][7:] not in r.text
        assert tenants.b_request not in r.text
