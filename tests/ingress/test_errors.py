"""A client's mistake is a 4xx with the one error body, never a 5xx."""

from __future__ import annotations

import uuid

import pytest
import pytest_asyncio

from tests.ingress.harness import Deployment

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

OK = {"model": "echo", "prompt": "hello", "max_tokens": 8}


def error_of(r: object, status: int, code: str | None = None) -> dict[str, object]:
    import httpx

    assert isinstance(r, httpx.Response)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def key(env: Deployment) -> dict[str, str]:
    return await env.create_tenant("careless", token_budget=10**9)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({**OK, "max_tokens": -1}, "invalid_request"),
        ({**OK, "max_tokens": 0}, "invalid_request"),
        ({**OK, "max_tokens": 10**30}, "invalid_request"),
        ({**OK, "max_tokens": "8"}, "invalid_request"),
        ({**OK, "max_tokens": 8.5}, "invalid_request"),
        ({**OK, "max_tokens": True}, "invalid_request"),
        ({**OK, "prompt": 5}, "invalid_request"),
        ({**OK, "temperature": 9}, "invalid_request"),
        ({**OK, "priority": -1}, "invalid_request"),
        ({**OK, "model": "has spaces"}, "invalid_request"),
        ({**OK, "model": "gpt-17"}, "unknown_model"),
        ({**OK, "max_tokens": 32_768}, "context_overflow"),
        ({**OK, "surprise": 1}, "invalid_request"),
        ({"model": "echo", "max_tokens": 8}, "invalid_request"),
        ({**OK, "messages": [{"role": "user", "content": "x"}]}, "invalid_request"),
        ({**OK, "prompt": None, "messages": []}, "invalid_request"),
        (
            {**OK, "prompt": None, "messages": [{"role": "robot", "content": "x"}]},
            "invalid_request",
        ),
        ({**OK, "prompt": None, "messages": [{"role": "user"}]}, "invalid_request"),
        ([1, 2, 3], "invalid_request"),
        ("just a string", "invalid_request"),
        (None, "invalid_request"),
    ],
)
async def test_invalid_request_bodies_are_422(
    env: Deployment, key: dict[str, str], payload: object, code: str
) -> None:
    r = await env.client.post("/v1/requests", json=payload, headers=key)
    error = error_of(r, 422, code)
    if code == "invalid_request" and isinstance(payload, dict) and "details" in error:
        assert "hello" not in r.text  # the input is not echoed back


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"model": "echo",', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b"NaN"],
)
async def test_malformed_json_is_400(env: Deployment, key: dict[str, str], raw: bytes) -> None:
    headers = {**key, "Content-Type": "application/json"}
    r = await env.client.post("/v1/requests", content=raw, headers=headers)
    assert r.status_code in (400, 413, 422), r.text
    error_of(r, r.status_code)


async def test_nan_temperature_is_422(env: Deployment, key: dict[str, str]) -> None:
    raw = b'{"model": "echo", "prompt": "x", "max_tokens": 1, "temperature": NaN}'
    r = await env.client.post(
        "/v1/requests", content=raw, headers={**key, "Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422)
    error_of(r, r.status_code)


async def test_a_body_that_is_not_json_is_4xx(env: Deployment, key: dict[str, str]) -> None:
    r = await env.client.post(
        "/v1/requests", content=b"model=echo", headers={**key, "Content-Type": "text/plain"}
    )
    assert 400 <= r.status_code < 500
    error_of(r, r.status_code)


async def test_oversized_prompts_and_bodies_are_413(env: Deployment, key: dict[str, str]) -> None:
    limit = env.settings.max_prompt_chars
    r = await env.client.post("/v1/requests", json={**OK, "prompt": "a" * (limit + 1)}, headers=key)
    error_of(r, 413, "prompt_too_large")
    huge = {**OK, "prompt": "a" * (env.settings.max_body_bytes + 10)}
    error_of(
        await env.client.post("/v1/requests", json=huge, headers=key), 413, "payload_too_large"
    )

    async def chunks() -> object:
        for _ in range(20):
            yield b"a" * 100_000

    r = await env.client.post(
        "/v1/requests",
        content=chunks(),  # type: ignore[arg-type]
        headers={**key, "Content-Type": "application/json"},
    )
    error_of(r, 413, "payload_too_large")


async def test_bad_idempotency_keys_are_422(env: Deployment, key: dict[str, str]) -> None:
    for bad in ("k" * 201, "with space"):
        r = await env.client.post("/v1/requests", json=OK, headers={**key, "Idempotency-Key": bad})
        error_of(r, 422, "invalid_request")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/requests/not-a-uuid",
        "/v1/tenants/careless/usage?from=2026-13-01",
        "/v1/tenants/careless/usage?from=yesterday",
        "/v1/tenants/careless/usage?from=2026-11-05&to=2026-11-01",
        "/v1/tenants/careless/usage?group_by=week",
        "/v1/tenants/careless/invoices/2026-13",
        "/v1/tenants/careless/invoices/november",
        "/v1/tenants/careless/invoices/2026-02-30",
        "/v1/tenants/careless/invoices/9999-12",
        "/v1/tenants/bad%20id/quota",
    ],
)
async def test_bad_paths_and_queries_are_422(
    env: Deployment, key: dict[str, str], path: str
) -> None:
    error_of(await env.client.get(path, headers=key), 422)


async def test_usage_and_invoices_answer_for_good_dates(
    env: Deployment, key: dict[str, str]
) -> None:
    r = await env.client.get(
        "/v1/tenants/careless/usage?from=2026-01-01&to=2026-02-01&group_by=model", headers=key
    )
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == []
    assert r.json()["group_by"] == "model"
    r = await env.client.get("/v1/tenants/careless/invoices/2026-11", headers=key)
    assert r.status_code == 200, r.text
    assert r.json()["period"] == "2026-11-01"
    assert r.json()["total"] == "0.00"


async def test_unknown_routes_and_methods_use_the_error_body(
    env: Deployment, key: dict[str, str]
) -> None:
    error_of(await env.client.get("/v2/nothing", headers=key), 404, "not_found")
    error_of(await env.client.delete("/v1/requests", headers=key), 405, "method_not_allowed")


async def test_a_made_up_method_does_not_become_a_metrics_label(env: Deployment) -> None:
    made_up = "BREW" + uuid.uuid4().hex[:6].upper()
    r = await env.client.request(made_up, "/healthz")
    assert 400 <= r.status_code < 500
    metrics = (await env.client.get("/metrics")).text
    assert made_up not in metrics
    assert 'method="other"' in metrics
