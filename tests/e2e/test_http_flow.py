"""Through the HTTP API of ``quotaflow up``: request → reserved → completed (Triton) → settled →
billed; the 429 path; an idempotent retry; one tenant never sees another's data; the CLI."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from quotaflow.api_client import AdminApi, TenantApi
from tests.e2e.conftest import Up, new_tenant

FINAL = {"settled", "released", "expired", "failed"}


def tenant_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def until_final(api: TenantApi, request_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        view = await api.request(request_id)
        # the text comes from another projection than the status: wait for both
        done = view["status"] in FINAL and (view["completed_at"] is None or view["text"])
        if done or time.monotonic() > deadline:
            return view
        await asyncio.sleep(0.2)


async def until(check: Any, timeout_s: float = 30) -> Any:
    """Await ``check()`` until it returns something truthy (the projections trail the log)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


def this_month() -> tuple[str, str, str]:
    today = datetime.now(UTC).date()
    start = today.replace(day=1).isoformat()
    return start, (today + timedelta(days=1)).isoformat(), today.strftime("%Y-%m")


async def test_a_request_is_reserved_completed_settled_and_billed(admin: AdminApi) -> None:
    name = tenant_name("flow")
    api = await new_tenant(admin, name, token_budget=100_000)
    await admin.set_price("echo", Decimal("0.10"), Decimal("0.20"))
    await admin.set_price("smollm2", Decimal("0.50"), Decimal("1.50"))

    echo = await api.submit(
        {"model": "echo", "prompt": "streams flow, quotas hold", "max_tokens": 16}
    )
    text = await api.submit(
        {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    )
    for r in (echo, text):
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("reserved", "pending")

    views = [await until_final(api, r.json()["request_id"]) for r in (echo, text)]
    for r, view in zip((echo, text), views, strict=True):
        assert view["status"] == "settled", view
        assert view["text"], view
        actual = view["actual_tokens"]
        assert actual["prompt"] == r.json()["estimated_prompt_tokens"]  # the estimate is exact
        assert 1 <= actual["completion"] <= view["max_tokens"]
        assert view["charged_tokens"] == actual
        assert view["reserved_tokens"] == r.json()["estimated_tokens"]
    charged = sum(v["actual_tokens"]["total"] for v in views)

    async def quota_settled() -> dict[str, Any] | None:
        q = await api.quota()
        return q if q["used"] == charged and q["reserved"] == 0 else None

    quota = await until(quota_settled)
    assert quota, await api.quota()
    assert quota["remaining"] == 100_000 - charged
    assert quota["open_reservations"] == 0

    start, end, period = this_month()

    async def billed() -> dict[str, Any] | None:
        u = await api.usage(start, end)
        return u if u["requests"] == 2 else None

    usage = await until(billed)
    assert usage, "the billing view never showed both requests"
    assert usage["total_tokens"] == charged
    by_model = {row["model"]: row for row in usage["rows"]}
    assert set(by_model) == {"echo", "smollm2"}
    invoice = await api.invoice(period)
    prices = {
        "echo": (Decimal("0.10"), Decimal("0.20")),
        "smollm2": (Decimal("0.50"), Decimal("1.50")),
    }
    cent = Decimal("0.01")
    expected = Decimal("0.00")
    for line in invoice["lines"]:  # per model: prompt and completion each rounded half up
        p, c = prices[line["model"]]
        row = by_model[line["model"]]
        expected += (row["prompt_tokens"] * p / 1000).quantize(cent, ROUND_HALF_UP)
        expected += (row["completion_tokens"] * c / 1000).quantize(cent, ROUND_HALF_UP)
    assert {line["model"] for line in invoice["lines"]} == {"echo", "smollm2"}
    assert Decimal(str(invoice["total"])) == expected


async def test_over_the_budget_is_a_429_with_a_reason_and_retry_after(admin: AdminApi) -> None:
    api = await new_tenant(admin, tenant_name("tiny"), token_budget=100)
    first = await api.submit({"model": "echo", "prompt": "one", "max_tokens": 40})
    assert first.status_code == 202, first.text
    second = await api.submit({"model": "echo", "prompt": "two", "max_tokens": 40})
    assert second.status_code == 429, second.text
    error = second.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"]["reason"]
    assert error["details"]["status"] == "rejected"
    view = await api.request(error["details"]["request_id"])
    assert view["status"] == "rejected"
    assert view["reject_reason"] == error["details"]["reason"]
    # a rate window gives a Retry-After that says when
    limited = await new_tenant(
        admin, tenant_name("rpm"), token_budget=10_000, requests_per_minute=1
    )
    ok = await limited.submit({"model": "echo", "prompt": "a", "max_tokens": 4})
    assert ok.status_code == 202, ok.text
    again = await limited.submit({"model": "echo", "prompt": "b", "max_tokens": 4})
    assert again.status_code == 429
    assert 1 <= int(again.headers["Retry-After"]) <= 60


async def test_an_idempotent_retry_returns_the_same_request(admin: AdminApi) -> None:
    api = await new_tenant(admin, tenant_name("retry"), token_budget=10_000)
    body = {"model": "echo", "prompt": "only once", "max_tokens": 8}
    first = await api.submit(body, idempotency_key="order-17")
    again = await api.submit(body, idempotency_key="order-17")
    assert first.status_code == again.status_code == 202
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.json()["replayed"] is True
    view = await until_final(api, first.json()["request_id"])
    assert view["status"] == "settled"

    async def one_request() -> dict[str, Any] | None:
        start, end, _ = this_month()
        u = await api.usage(start, end)
        return u if u["requests"] >= 1 else None

    usage = await until(one_request)
    assert usage
    assert usage["requests"] == 1
    changed = await api.submit({**body, "max_tokens": 9}, idempotency_key="order-17")
    assert changed.status_code == 409


async def test_one_tenant_never_sees_another(admin: AdminApi, client: httpx.AsyncClient) -> None:
    alice = await new_tenant(admin, tenant_name("alice"), token_budget=10_000)
    bob = await new_tenant(admin, tenant_name("bob"), token_budget=10_000)
    r = await bob.submit({"model": "echo", "prompt": "bob's secret", "max_tokens": 4})
    assert r.status_code == 202
    bobs = r.json()["request_id"]
    start, end, period = this_month()
    as_alice = alice.headers
    for path in (
        f"/v1/requests/{bobs}",
        f"/v1/tenants/{bob.tenant_id}/quota",
        f"/v1/tenants/{bob.tenant_id}/usage?from={start}&to={end}",
        f"/v1/tenants/{bob.tenant_id}/invoices/{period}",
        f"/v1/admin/tenants/{bob.tenant_id}",
        "/v1/admin/tenants",
    ):
        got = await client.get(path, headers=as_alice)
        assert got.status_code in (401, 403, 404), (path, got.status_code)
        assert "bob's secret" not in got.text
        assert bobs not in got.text.replace(path, "")
    assert (await bob.request(bobs))["tenant_id"] == bob.tenant_id


def test_the_tenants_cli_creates_sets_and_lists(up_system: Up) -> None:
    name = tenant_name("cli")
    created = up_system.cli(
        "tenants", "create", name, "--budget", "5000", "--tokens-per-minute", "900"
    )
    assert created.returncode == 0, created.stderr
    assert "API key (shown once): qf_" in created.stdout
    changed = up_system.cli("tenants", "set-quota", name, "--budget", "7000")
    assert changed.returncode == 0, changed.stderr
    assert '"token_budget": 7000' in changed.stdout
    deadline = time.monotonic() + 30
    while True:
        listed = up_system.cli("tenants", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {t["tenant_id"]: t for t in map(json.loads, listed.stdout.splitlines())}
        if rows[name]["policy"]["token_budget"] == 7000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows[name]["policy"]["token_budget"] == 7000, listed.stdout
    assert rows[name]["policy"]["tokens_per_minute"] is None  # set-quota replaces the policy
    table = up_system.cli("tenants", "list")
    assert table.returncode == 0
    assert "7,000" in table.stdout
    dup = up_system.cli("tenants", "create", name, "--budget", "1")
    assert dup.returncode == 1
    assert "409" in dup.stderr
    unreachable = up_system.cli("tenants", "list", "--url", "http://127.0.0.1:1")
    assert unreachable.returncode == 2
    assert "cannot reach the API" in unreachable.stderr
