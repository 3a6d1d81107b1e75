"""Priority slots, timeouts, retries and error classification, with a fake model."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from events.model import RequestSpec
from streams.agents.inference_calls import (
    Failure,
    PrioritySlots,
    RetryPolicy,
    Success,
    call_model,
)
from streams.agents.inference_client import CallError, classify
from tests.inference.helpers import FakeModel

FAST = RetryPolicy(attempts=3, backoff_s=0.01, backoff_max_s=0.02, deadline_s=5, timeout_s=5)
UNAVAILABLE = "UNAVAILABLE: failed to connect to all addresses; Connection refused"


def spec(model: str = "echo", max_tokens: int = 8, priority: int = 0) -> RequestSpec:
    return RequestSpec(model=model, prompt="hi", max_tokens=max_tokens, priority=priority)


async def call(
    model: FakeModel, policy: RetryPolicy = FAST, s: RequestSpec | None = None
) -> object:
    return await call_model(
        model,
        s or spec(),
        request_id="r1",
        slots=PrioritySlots(4),
        policy=policy,
        rng=random.Random(1),
    )


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        ("StatusCode.UNAVAILABLE", True),
        ("StatusCode.DEADLINE_EXCEEDED", True),
        ("StatusCode.RESOURCE_EXHAUSTED", True),
        ("StatusCode.ABORTED", True),
        ("StatusCode.CANCELLED", True),
        ("StatusCode.NOT_FOUND", False),
        ("StatusCode.INVALID_ARGUMENT", False),
        ("StatusCode.INTERNAL", False),
        (None, False),
    ],
)
def test_classify(status: str | None, retryable: bool) -> None:
    err = classify(status, "what happened")
    assert err.retryable is retryable
    assert err.reason.endswith("what happened")
    if status is not None:
        assert err.reason.startswith(status.removeprefix("StatusCode.") + ": ")


def test_classify_keeps_triton_s_message() -> None:
    err = classify("StatusCode.NOT_FOUND", "Request for unknown model: 'gpt-17' is not found")
    assert err.reason == "NOT_FOUND: Request for unknown model: 'gpt-17' is not found"


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(backoff_s=0.25, backoff_max_s=1.0)
    rng = random.Random(3)
    for attempt, base in [(1, 0.25), (2, 0.5), (3, 1.0), (4, 1.0), (9, 1.0)]:
        for _ in range(50):
            assert base / 2 <= policy.delay(attempt, rng) <= base


def test_the_call_deadline_grows_with_max_tokens() -> None:
    policy = RetryPolicy(timeout_s=10, timeout_per_token_s=0.5)
    assert policy.timeout_for(spec(max_tokens=1)) == 10.5
    assert policy.timeout_for(spec(max_tokens=100)) == 60


async def test_an_answer_on_the_first_call() -> None:
    model = FakeModel()
    out = await call(model)
    assert isinstance(out, Success)
    assert (out.attempts, out.answer.completion.completion_tokens) == (1, 4)
    assert out.latency_ms >= 0


async def test_retryable_errors_are_retried_until_an_answer() -> None:
    model = FakeModel(errors={"r1": [CallError(UNAVAILABLE, retryable=True)] * 2})
    out = await call(model)
    assert isinstance(out, Success)
    assert out.attempts == 3
    assert model.calls == ["r1"] * 3


async def test_retries_are_bounded_by_attempts() -> None:
    model = FakeModel(errors={"r1": [CallError(UNAVAILABLE, retryable=True)] * 10})
    out = await call(model)
    assert isinstance(out, Failure)
    assert out.retryable
    assert out.attempts == 3
    assert out.reason.startswith("gave up after 3 attempt(s) in ")
    assert out.reason.endswith(UNAVAILABLE)


async def test_retries_are_bounded_by_the_deadline() -> None:
    policy = RetryPolicy(attempts=100, backoff_s=0.05, backoff_max_s=0.05, deadline_s=0.3)
    model = FakeModel(errors={"r1": [CallError(UNAVAILABLE, retryable=True)] * 100})
    started = time.monotonic()
    out = await call(model, policy)
    assert time.monotonic() - started < 0.5
    assert isinstance(out, Failure)
    assert out.retryable
    assert 3 <= out.attempts < 20


async def test_a_non_retryable_error_fails_at_once() -> None:
    reason = "NOT_FOUND: Request for unknown model: 'gpt-17' is not found"
    model = FakeModel(errors={"r1": [CallError(reason, retryable=False)]})
    out = await call(model)
    assert out == Failure(reason, retryable=False, attempts=1)


async def test_a_model_that_never_answers_times_out_and_fails_retryable() -> None:
    policy = RetryPolicy(attempts=1, timeout_s=0.05, timeout_per_token_s=0)
    out = await call(FakeModel(), policy, spec(model="hang"))
    assert isinstance(out, Failure)
    assert out.retryable
    assert "DEADLINE_EXCEEDED: no answer in 0.1s" in out.reason


async def test_an_unexpected_error_is_a_failure_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(FakeModel):
        async def generate(self, s: RequestSpec, *, request_id: str, timeout_s: float) -> None:  # type: ignore[override]
            raise KeyError("text")

    out = await call(Broken())
    assert out == Failure("inference agent error: KeyError('text')", retryable=False, attempts=1)
    assert "failed unexpectedly" in caplog.text


async def test_slots_bound_concurrency() -> None:
    slots = PrioritySlots(3)
    model = FakeModel(delay_s=0.02)
    await asyncio.gather(
        *(
            call_model(
                model, spec(), request_id=str(i), slots=slots, policy=FAST, rng=random.Random()
            )
            for i in range(20)
        )
    )
    assert model.max_in_flight == 3
    assert slots.in_use == 0


async def test_a_freed_slot_goes_to_the_highest_priority_waiter() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    await slots.acquire(0)  # hold the only slot while the others queue

    async def take(name: str, priority: int) -> None:
        async with slots.slot(priority):
            order.append(name)
            await asyncio.sleep(0)

    tasks = [
        asyncio.create_task(take(name, p))
        for name, p in [("a0", 0), ("b5", 5), ("c9", 9), ("d5", 5), ("e0", 0)]
    ]
    await asyncio.sleep(0.01)
    slots.release()
    await asyncio.gather(*tasks)
    assert order == ["c9", "b5", "d5", "a0", "e0"]
    assert slots.in_use == 0


async def test_a_cancelled_waiter_does_not_leak_its_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(0)
    waiter = asyncio.create_task(slots.acquire(9))
    other = asyncio.create_task(slots.acquire(1))
    await asyncio.sleep(0.01)
    waiter.cancel()
    slots.release()
    await asyncio.wait_for(other, 1)  # the slot passed over the cancelled waiter
    assert waiter.cancelled()
    slots.release()
    assert slots.in_use == 0
