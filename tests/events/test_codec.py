from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from events import DecodeError, decode, encode, event_json_schema
from events.model import (
    CURRENT_VERSIONS,
    AnyEvent,
    ChatMessage,
    ClockTicked,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    PriceSet,
    QuotaPolicy,
    QuotaPolicySet,
    RequestRejected,
    RequestSpec,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
)

tenants = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
tokens = st.integers(min_value=0, max_value=10_000_000)
text = st.text(max_size=200)
models = st.sampled_from(["smollm2", "echo", "m-1.b_2"])


def envelope() -> dict[str, Any]:
    return {
        "event_id": st.uuids(),
        "occurred_at": times,
        "tenant_id": tenants,
        "causation_id": st.none() | st.uuids(),
        "correlation_id": st.none() | st.uuids(),
        "headers": st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
    }


policies = st.builds(
    QuotaPolicy,
    token_budget=tokens,
    period=st.sampled_from(["month", "day"]),
    tokens_per_minute=st.none() | st.integers(1, 10**7),
    requests_per_minute=st.none() | st.integers(1, 10**5),
    max_concurrent=st.none() | st.integers(1, 10**4),
    reservation_ttl_s=st.integers(1, 86_400),
)
specs = st.one_of(
    st.builds(
        RequestSpec,
        model=models,
        prompt=text,
        max_tokens=st.integers(1, 32_768),
        temperature=st.floats(0, 2),
        priority=st.integers(0, 9),
    ),
    st.builds(
        RequestSpec,
        model=models,
        messages=st.lists(
            st.builds(ChatMessage, role=st.sampled_from(["system", "user"]), content=text),
            min_size=1,
            max_size=3,
        ),
        max_tokens=st.integers(1, 32_768),
    ),
)
money = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)

EVENTS = st.one_of(
    st.builds(
        TenantRegistered,
        **envelope(),
        name=st.text(min_size=1, max_size=50),
        api_key_hash=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        policy=policies,
    ),
    st.builds(QuotaPolicySet, **envelope(), policy=policies),
    st.builds(PriceSet, **envelope(), model=models, prompt_per_1k=money, completion_per_1k=money),
    st.builds(ClockTicked, **envelope(), partition=st.integers(0, 255)),
    st.builds(
        InferenceRequested,
        **envelope(),
        request_id=st.uuids(),
        spec=specs,
        estimated_prompt_tokens=tokens,
        idempotency_key=st.none() | st.text(max_size=40),
    ),
    st.builds(
        TokensReserved,
        **envelope(),
        request_id=st.uuids(),
        tokens=tokens,
        expires_at=times,
        spec=specs,
    ),
    st.builds(
        RequestRejected,
        **envelope(),
        request_id=st.uuids(),
        reason=st.sampled_from(["budget", "tpm", "rpm", "concurrency", "unknown_tenant"]),
        detail=text,
        requested_tokens=tokens,
        retry_after_s=st.none() | st.floats(0, 1e6),
    ),
    st.builds(
        InferenceCompleted,
        **envelope(),
        request_id=st.uuids(),
        model=models,
        prompt_tokens=tokens,
        completion_tokens=tokens,
        latency_ms=st.floats(0, 1e6),
        text=text,
    ),
    st.builds(
        InferenceFailed,
        **envelope(),
        request_id=st.uuids(),
        model=models,
        reason=text,
        retryable=st.booleans(),
    ),
    st.builds(
        ReservationSettled,
        **envelope(),
        request_id=st.uuids(),
        model=models,
        reserved=tokens,
        prompt_tokens=tokens,
        completion_tokens=tokens,
    ),
    st.builds(ReservationReleased, **envelope(), request_id=st.uuids(), reserved=tokens),
    st.builds(ReservationExpired, **envelope(), request_id=st.uuids(), reserved=tokens),
)


@given(EVENTS)
@settings(max_examples=400)
def test_every_event_round_trips_through_the_codec(event: AnyEvent) -> None:
    data = encode(event)
    assert decode(data) == event
    assert encode(decode(data)) == data


def test_the_strategy_covers_every_event_type() -> None:
    union_members = TypeAdapter(AnyEvent).json_schema()["oneOf"]
    assert len(union_members) == len(CURRENT_VERSIONS) == 12


def _sample() -> InferenceRequested:
    return InferenceRequested(
        tenant_id="acme",
        request_id=uuid.uuid4(),
        spec=RequestSpec(model="echo", prompt="hi", max_tokens=8),
        estimated_prompt_tokens=3,
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"\x00\xff garbage", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "NoSuchThing", "version": 1}', "unknown event type 'NoSuchThing'"),
        (b'{"version": 1}', "unknown event type None"),
        (b'{"type": "InferenceRequested", "version": "1"}', "version must be an integer"),
        (b'{"type": "InferenceRequested", "version": 99}', "newer than this reader"),
        (b'{"type": "InferenceRequested", "version": 1}', "invalid InferenceRequested"),
    ],
)
def test_garbage_raises_one_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert reason in str(info.value)
    assert info.value.data == data


@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_another_exception(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


def test_events_are_immutable() -> None:
    event = _sample()
    with pytest.raises(ValueError, match="frozen"):
        event.tenant_id = "other"  # type: ignore[misc]


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        ReservationExpired(
            tenant_id="acme",
            request_id=uuid.uuid4(),
            reserved=1,
            occurred_at=datetime(2026, 1, 1),
        )


def test_a_request_needs_exactly_one_of_prompt_and_messages() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RequestSpec(model="echo", max_tokens=4)
    with pytest.raises(ValueError, match="exactly one"):
        RequestSpec(
            model="echo",
            prompt="x",
            messages=[ChatMessage(role="user", content="y")],
            max_tokens=4,
        )


def test_estimated_tokens_is_prompt_plus_completion_bound() -> None:
    assert _sample().estimated_tokens == 3 + 8


def test_settlement_returns_the_unused_reservation() -> None:
    settled = ReservationSettled(
        tenant_id="acme",
        request_id=uuid.uuid4(),
        model="echo",
        reserved=100,
        prompt_tokens=30,
        completion_tokens=20,
        occurred_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert (settled.actual, settled.returned) == (50, 50)


def test_price_keeps_exact_decimals() -> None:
    price = PriceSet(
        tenant_id="system",
        model="echo",
        prompt_per_1k=Decimal("0.000150"),
        completion_per_1k=Decimal(0),
    )
    decoded = decode(encode(price))
    assert isinstance(decoded, PriceSet)
    assert decoded.prompt_per_1k == Decimal("0.000150")


def test_json_schema_names_every_type() -> None:
    schema = event_json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(CURRENT_VERSIONS)
