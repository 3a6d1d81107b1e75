"""Bad input through the API: always a 4xx with the one error body, never a 5xx, and a 202
exactly when the request is valid.

tests/ingress/test_errors.py covers the common mistakes on ``POST /v1/requests`` (fast path
only); this module adds the cases it leaves out (wrong types of ``model``/``max_tokens``/
``priority``, unknown and near-miss model names, prompts counted in characters, oversized
chat messages, the admin routes' bodies) and a hypothesis property over mutated request bodies,
each against the fast path and against the FastAPI route (``fast_path=False``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from quotaflow.settings import Settings
from quotaflow.tokens import ContextOverflowError, UnknownModelError, estimate
from streams.ingress.schemas import InferenceRequestBody
from tests.conftest import RUN_ID
from tests.ingress.harness import Deployment, deployment
from tests.reliability.garbage import json_values

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

OK = {"model": "echo", "prompt": "hello", "max_tokens": 8}
POLICY = {"token_budget": 1000}


@pytest_asyncio.fixture(
    loop_scope="module", scope="module", params=[True, False], ids=["fast-path", "route"]
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    unique = f"t{RUN_ID}-b{uuid.uuid4().hex[:8]}"
    async with deployment(Settings(), unique, fast_path=request.param) as d:
        yield d


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def key(env: Deployment) -> dict[str, str]:
    return await env.create_tenant("sloppy", token_budget=10**12)


def error_code(r: httpx.Response) -> str:
    """The 4xx's error code, after checking the body has the one error shape."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    return str(body["error"]["code"])


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({**OK, "model": 5}, 422, "invalid_request"),
        ({**OK, "model": None}, 422, "invalid_request"),
        ({**OK, "model": ["echo"]}, 422, "invalid_request"),
        ({**OK, "model": ""}, 422, "invalid_request"),
        ({**OK, "model": "echo "}, 422, "invalid_request"),
        ({**OK, "model": "x" * 65}, 422, "invalid_request"),
        ({**OK, "model": "ECHO"}, 422, "unknown_model"),
        ({**OK, "model": "smollm2-instruct"}, 422, "unknown_model"),
        ({**OK, "model": "system"}, 422, "unknown_model"),
        ({"model": "echo", "prompt": "hello"}, 422, "invalid_request"),
        ({**OK, "max_tokens": None}, 422, "invalid_request"),
        ({**OK, "max_tokens": [8]}, 422, "invalid_request"),
        ({**OK, "max_tokens": -(2**63)}, 422, "invalid_request"),
        ({**OK, "max_tokens": -(2**80)}, 422, "invalid_request"),
        ({**OK, "max_tokens": "-1"}, 422, "invalid_request"),
        ({**OK, "max_tokens": 8.0}, 422, "invalid_request"),
        ({**OK, "max_tokens": 32_769}, 422, "invalid_request"),
        ({**OK, "prompt": ["hello"]}, 422, "invalid_request"),
        ({**OK, "prompt": {"text": "hello"}}, 422, "invalid_request"),
        ({**OK, "temperature": "0.5"}, 422, "invalid_request"),
        ({**OK, "temperature": -0.1}, 422, "invalid_request"),
        ({**OK, "priority": 10}, 422, "invalid_request"),
        ({**OK, "priority": "1"}, 422, "invalid_request"),
        ({**OK, "priority": 1.5}, 422, "invalid_request"),
        ({**OK, "tenant_id": "someone-else"}, 422, "invalid_request"),
        (
            {"model": "echo", "max_tokens": 8, "messages": [{"role": "user", "content": 5}]},
            422,
            "invalid_request",
        ),
        (
            {
                "model": "echo",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "x"}] * 257,
            },
            422,
            "invalid_request",
        ),
    ],
)
async def test_wrong_types_and_unknown_models_are_422(
    env: Deployment, key: dict[str, str], payload: dict[str, Any], status: int, code: str
) -> None:
    r = await env.client.post("/v1/requests", json=payload, headers=key)
    assert r.status_code == status, r.text
    assert error_code(r) == code


async def test_prompts_are_limited_in_characters_not_bytes(
    env: Deployment, key: dict[str, str]
) -> None:
    limit = env.settings.max_prompt_chars
    four_bytes = "\U0001f600"  # well below the body limit even at 4 bytes a character
    assert len((four_bytes * (limit + 1)).encode()) < env.settings.max_body_bytes
    r = await env.client.post(
        "/v1/requests", json={**OK, "prompt": four_bytes * (limit + 1)}, headers=key
    )
    assert r.status_code == 413, r.text
    assert error_code(r) == "prompt_too_large"
    # chat messages count together
    half = "m" * (limit // 2 + 1)
    messages = [{"role": "user", "content": half}, {"role": "assistant", "content": half}]
    r = await env.client.post(
        "/v1/requests", json={"model": "echo", "max_tokens": 8, "messages": messages}, headers=key
    )
    assert r.status_code == 413, r.text
    assert error_code(r) == "prompt_too_large"


@pytest.mark.parametrize(
    "body",
    [
        {"tenant_id": "system", "name": "x", "policy": POLICY},
        {"tenant_id": "bad id", "name": "x", "policy": POLICY},
        {"tenant_id": "", "name": "x", "policy": POLICY},
        {"tenant_id": "t" * 65, "name": "x", "policy": POLICY},
        {"tenant_id": "-leading-dash", "name": "x", "policy": POLICY},
        {"tenant_id": 7, "name": "x", "policy": POLICY},
        {"tenant_id": "okay", "name": "", "policy": POLICY},
        {"tenant_id": "okay", "name": "x"},
        {"tenant_id": "okay", "name": "x", "policy": {"token_budget": -1}},
        {"tenant_id": "okay", "name": "x", "policy": {"token_budget": "lots"}},
        {"tenant_id": "okay", "name": "x", "policy": {"token_budget": 1, "period": "year"}},
        {"tenant_id": "okay", "name": "x", "policy": {"token_budget": 1, "tokens_per_minute": 0}},
        {"tenant_id": "okay", "name": "x", "policy": {"token_budget": 1, "reservation_ttl_s": 0}},
        {"tenant_id": "okay", "name": "x", "policy": {"token_budget": 1, "surprise": True}},
        {"tenant_id": "okay", "name": "x", "policy": POLICY, "api_key": "chosen"},
        ["okay", "x", POLICY],
    ],
)
async def test_bad_tenant_bodies_are_422_and_register_nothing(
    env: Deployment, key: dict[str, str], body: Any
) -> None:
    r = await env.client.post("/v1/admin/tenants", json=body, headers=env.admin)
    assert r.status_code == 422, r.text
    error_code(r)
    names = {
        t["tenant_id"]
        for t in (await env.client.get("/v1/admin/tenants", headers=env.admin)).json()["tenants"]
    }
    assert "okay" not in names


async def test_bad_policies_and_prices_are_4xx(env: Deployment, key: dict[str, str]) -> None:
    put = env.client.put
    r = await put("/v1/admin/tenants/nobody-here/policy", json=POLICY, headers=env.admin)
    assert (r.status_code, error_code(r)) == (404, "not_found")
    for policy in ({"token_budget": -5}, {"token_budget": 1, "max_concurrent": 0}, [1000], {}):
        r = await put("/v1/admin/tenants/sloppy/policy", json=policy, headers=env.admin)
        assert r.status_code == 422, (policy, r.text)
        error_code(r)
    good = {"prompt_per_1k": "0.001", "completion_per_1k": "0.002"}
    for price in (
        {**good, "prompt_per_1k": "-0.001"},
        {**good, "prompt_per_1k": "cheap"},
        {**good, "prompt_per_1k": "NaN"},
        {**good, "completion_per_1k": "Infinity"},
        {**good, "completion_per_1k": "0.0000000001"},  # below the 9 decimal places
        {**good, "currency": "usd"},
        {"prompt_per_1k": "0.001"},
    ):
        r = await put("/v1/admin/prices/echo", json=price, headers=env.admin)
        assert r.status_code == 422, (price, r.text)
        error_code(r)
    r = await put("/v1/admin/prices/bad%20model", json=good, headers=env.admin)
    assert r.status_code == 422, r.text


# --- the property: any body gets a 202 iff it is a valid request --------------------------

messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "robot"]), "content": st.text(max_size=20)}
    ),
    max_size=3,
)
#: Per field: values around its bounds (valid ones included), or anything at all.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["echo", "smollm2", "ECHO", "gpt-17", "", "echo\n", "a b"]),
    "prompt": st.text(max_size=40),
    "messages": messages,
    "max_tokens": st.integers(min_value=-2, max_value=33_000) | st.sampled_from([2**63, -(2**65)]),
    "temperature": st.floats(min_value=-0.5, max_value=2.5) | st.sampled_from([0, 2, "1"]),
    "priority": st.integers(min_value=-1, max_value=10),
    "surprise": st.just(1),
}
changes_of = st.sampled_from(sorted(FIELD_VALUES)).flatmap(
    lambda name: st.tuples(
        st.just(name), st.none() | (FIELD_VALUES[name] | json_values).map(lambda v: (v,))
    )
)
mutations = st.lists(changes_of, min_size=1, max_size=3)


def mutate(changes: list[tuple[str, tuple[Any] | None]]) -> bytes:
    """The valid body with fields set (``(value,)``) or removed (``None``)."""
    body: dict[str, Any] = dict(OK)
    for name, change in changes:
        if change is None:
            body.pop(name, None)
        else:
            body[name] = change[0]
    return json.dumps(body).encode()


def verdict(raw: bytes, max_chars: int) -> str:
    """What the API must answer: "202" or the error code of the 4xx."""
    try:
        body = InferenceRequestBody.model_validate_json(raw)
    except ValidationError:
        return "invalid_request"
    if body.prompt_chars() > max_chars:
        return "prompt_too_large"
    messages = None if body.messages is None else [m.model_dump() for m in body.messages]
    try:
        estimate(body.model, body.prompt, messages, body.max_tokens)
    except UnknownModelError:
        return "unknown_model"
    except ContextOverflowError:
        return "context_overflow"
    return "202"


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(changes=mutations)
async def test_any_body_is_a_202_exactly_when_valid(
    env: Deployment, key: dict[str, str], changes: list[tuple[str, tuple[Any] | None]]
) -> None:
    raw = mutate(changes)
    expected = verdict(raw, env.settings.max_prompt_chars)
    headers = {**key, "Content-Type": "application/json"}
    r = await env.client.post("/v1/requests", content=raw, headers=headers)
    if expected == "202":
        assert r.status_code == 202, (raw, r.text)
        assert r.json()["status"] in ("reserved", "pending")
    else:
        assert error_code(r) == expected, (raw, r.text)
