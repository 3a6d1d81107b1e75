"""With the fast path switched off, FastAPI's route serves POST /v1/requests the same way."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from quotaflow.settings import Settings
from streams.ingress.schemas import RequestAccepted
from tests.conftest import RUN_ID
from tests.ingress.harness import Deployment, deployment

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

BODY = {"model": "echo", "prompt": "hello", "max_tokens": 50}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env() -> AsyncIterator[Deployment]:
    unique = f"t{RUN_ID}-s{uuid.uuid4().hex[:8]}"
    async with deployment(Settings(), unique, fast_path=False) as d:
        yield d


async def test_the_route_answers_like_the_fast_path(env: Deployment) -> None:
    assert env.settings.fast_path is False
    key = await env.create_tenant("slowlane", token_budget=100)
    ok = await env.client.post("/v1/requests", json=BODY, headers=key)
    assert ok.status_code == 202, ok.text
    assert RequestAccepted.model_validate(ok.json()).status == "reserved"
    rejected = await env.client.post("/v1/requests", json=BODY, headers=key)
    assert rejected.status_code == 429
    assert rejected.json()["error"]["details"]["reason"] == "budget"
    bad = await env.client.post("/v1/requests", json={**BODY, "max_tokens": -1}, headers=key)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["fields"][0]["field"] == "body.max_tokens"
    raw = await env.client.post(
        "/v1/requests", content=b"{", headers={**key, "Content-Type": "application/json"}
    )
    assert raw.json()["error"]["code"] == "malformed_json"
    assert (await env.client.post("/v1/requests", json=BODY)).status_code == 401
    assert (await env.client.post("/v1/requests", json=BODY, headers=env.admin)).status_code == 403
