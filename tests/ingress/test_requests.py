"""POST /v1/requests and GET /v1/requests/{id} with the real quota, view and billing agents."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from events import InferenceCompleted, decode
from quotaflow.tokens import estimate
from streams.ingress.schemas import RequestAccepted
from streams.log import Position, read_until_tail
from tests.ingress.harness import Deployment

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "Write a haiku about stream processing."


def body(max_tokens: int = 32, **extra: object) -> dict[str, object]:
    return {"model": "echo", "prompt": PROMPT, "max_tokens": max_tokens, **extra}


async def requested_ids(env: Deployment, tenant: str) -> list[str]:
    """Request ids of the InferenceRequested records of ``tenant`` in the log."""
    out = []
    stream = env.topology.requests.stream_for(tenant)
    async for records in read_until_tail(env.log, stream, Position.first()):
        for r in records:
            event = decode(r.data)
            if event.tenant_id == tenant and event.type == "InferenceRequested":
                out.append(str(event.request_id))
    return out


async def test_a_request_within_quota_is_reserved(env: Deployment) -> None:
    key = await env.create_tenant("acme", token_budget=100_000)
    r = await env.client.post("/v1/requests", json=body(), headers=key)
    assert r.status_code == 202, r.text
    answer = r.json()
    RequestAccepted.model_validate(answer)  # the hot path serializes it by hand
    expected = estimate("echo", PROMPT, None, 32)
    assert answer["status"] == "reserved"
    assert answer["reserved_tokens"] == expected.total
    assert answer["estimated_prompt_tokens"] == expected.prompt_tokens
    assert r.headers["location"] == f"/v1/requests/{answer['request_id']}"
    # the quota view shows the reservation
    for _ in range(100):
        q = await env.client.get("/v1/tenants/acme/quota", headers=key)
        if q.status_code == 200 and q.json()["reserved"] == expected.total:
            break
        await asyncio.sleep(0.05)
    assert q.json()["reserved"] == expected.total
    assert q.json()["remaining"] == 100_000 - expected.total


async def test_a_chat_request_counts_its_messages(env: Deployment) -> None:
    key = await env.create_tenant("chatty", token_budget=100_000)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    r = await env.client.post(
        "/v1/requests", json={"model": "echo", "messages": messages, "max_tokens": 5}, headers=key
    )
    assert r.status_code == 202, r.text
    assert r.json()["reserved_tokens"] == estimate("echo", None, messages, 5).total


async def test_over_the_budget_is_429_with_retry_after(env: Deployment) -> None:
    key = await env.create_tenant("tight", token_budget=200, period="day")
    first = await env.client.post("/v1/requests", json=body(100), headers=key)
    assert first.status_code == 202, first.text
    r = await env.client.post("/v1/requests", json=body(100), headers=key)
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"]["reason"] == "budget"
    retry_after = error["details"]["retry_after_s"]
    assert retry_after is not None
    assert retry_after > 0
    assert int(r.headers["retry-after"]) >= retry_after
    assert int(r.headers["retry-after"]) <= retry_after + 1


async def test_rate_limit_rejection_says_when_to_retry(env: Deployment) -> None:
    key = await env.create_tenant("rpm1", token_budget=10**9, requests_per_minute=1)
    assert (await env.client.post("/v1/requests", json=body(), headers=key)).status_code == 202
    r = await env.client.post("/v1/requests", json=body(), headers=key)
    assert r.status_code == 429
    assert r.json()["error"]["details"]["reason"] == "rpm"
    assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_an_idempotent_retry_returns_the_same_request_and_appends_nothing(
    env: Deployment,
) -> None:
    key = await env.create_tenant("retry", token_budget=100_000)
    headers = {**key, "Idempotency-Key": "order-17"}
    first = await env.client.post("/v1/requests", json=body(), headers=headers)
    assert first.status_code == 202, first.text
    again = await env.client.post("/v1/requests", json=body(), headers=headers)
    assert again.status_code == 202, again.text
    a, b = first.json(), again.json()
    assert b["request_id"] == a["request_id"]
    assert (b["status"], b["reserved_tokens"]) == (a["status"], a["reserved_tokens"])
    assert b["replayed"] is True
    assert a["replayed"] is False
    assert again.headers["idempotent-replayed"] == "true"
    assert await requested_ids(env, "retry") == [a["request_id"]]
    # the same key with another body is a conflict; another key is another request
    other = await env.client.post("/v1/requests", json=body(7), headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    fresh = await env.client.post(
        "/v1/requests", json=body(), headers={**key, "Idempotency-Key": "order-18"}
    )
    assert fresh.json()["request_id"] != a["request_id"]
    assert len(await requested_ids(env, "retry")) == 2


async def test_an_idempotent_retry_of_a_rejection_is_the_same_rejection(env: Deployment) -> None:
    key = await env.create_tenant("retry429", token_budget=10)
    headers = {**key, "Idempotency-Key": "k1"}
    first = await env.client.post("/v1/requests", json=body(), headers=headers)
    again = await env.client.post("/v1/requests", json=body(), headers=headers)
    assert first.status_code == again.status_code == 429
    assert (
        first.json()["error"]["details"]["request_id"]
        == (again.json()["error"]["details"]["request_id"])
    )
    assert again.json()["error"]["details"]["replayed"] is True
    assert len(await requested_ids(env, "retry429")) == 1


async def test_concurrent_first_attempts_get_one_decision(env: Deployment) -> None:
    key = await env.create_tenant("race", token_budget=100_000)
    headers = {**key, "Idempotency-Key": "same"}
    answers = await asyncio.gather(
        *(env.client.post("/v1/requests", json=body(), headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["request_id"] for r in answers}) == 1
    assert {r.json()["status"] for r in answers} == {"reserved"}
    # possibly several records of one request id (the documented race), one reservation
    ids = await requested_ids(env, "race")
    assert len(set(ids)) == 1
    for _ in range(100):
        q = (await env.client.get("/v1/tenants/race/quota", headers=key)).json()
        if q.get("open_reservations") == 1:
            break
        await asyncio.sleep(0.05)
    assert q["open_reservations"] == 1


async def test_a_late_decision_is_pending(env: Deployment) -> None:
    key = await env.create_tenant("slowpoke", token_budget=100_000)
    await env.stop_agents()
    try:
        services = env.api.state.services
        services.settings = services.settings.model_copy(update={"decision_timeout_s": 0.2})
        r = await env.client.post("/v1/requests", json=body(), headers=key)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending"
        assert r.json()["reserved_tokens"] is None
    finally:
        services.settings = env.settings
        env.start_agents()
    # the decision comes later: GET shows it
    rid = r.json()["request_id"]
    for _ in range(200):
        got = await env.client.get(f"/v1/requests/{rid}", headers=key)
        if got.status_code == 200 and got.json()["status"] == "reserved":
            break
        await asyncio.sleep(0.05)
    assert got.json()["status"] == "reserved"


async def test_get_shows_the_completed_text_and_the_actual_tokens(env: Deployment) -> None:
    key = await env.create_tenant("reader", token_budget=100_000)
    r = await env.client.post("/v1/requests", json=body(40), headers=key)
    rid = r.json()["request_id"]
    got = await env.client.get(f"/v1/requests/{rid}", headers=key)
    assert got.status_code == 200
    assert got.json()["status"] in ("requested", "reserved")
    # what the inference agent will publish: the completion (the quota agent settles it)
    await env.publish(
        InferenceCompleted(
            tenant_id="reader",
            request_id=uuid.UUID(rid),
            model="echo",
            prompt_tokens=r.json()["estimated_prompt_tokens"],
            completion_tokens=12,
            latency_ms=3.5,
            text="streams flow, quotas hold",
        )
    )
    for _ in range(200):
        got = await env.client.get(f"/v1/requests/{rid}", headers=key)
        if got.json()["status"] == "settled" and got.json()["text"] is not None:
            break
        await asyncio.sleep(0.05)
    view = got.json()
    assert view["status"] == "settled"
    assert view["text"] == "streams flow, quotas hold"
    prompt = r.json()["estimated_prompt_tokens"]
    assert view["estimated_tokens"] == prompt + 40
    assert view["reserved_tokens"] == prompt + 40
    assert view["actual_tokens"] == {"prompt": prompt, "completion": 12, "total": prompt + 12}
    assert view["charged_tokens"] == view["actual_tokens"]


async def test_an_unknown_request_is_404(env: Deployment) -> None:
    key = await env.create_tenant("nobody", token_budget=10)
    r = await env.client.get(f"/v1/requests/{uuid.uuid4()}", headers=key)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
