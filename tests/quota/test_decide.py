"""Focused examples of the quota rules (the properties are in test_properties.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from events import (
    Event,
    InferenceRequested,
    QuotaPolicy,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TokensReserved,
    derive_id,
)
from streams.quota import QuotaState, decide, evolve, replay, tenant_quota
from tests.quota.builder import Builder


def run(b: Builder, state: QuotaState | None = None) -> list[Event]:
    return replay(b.events, state)[1]


def last_decision(b: Builder) -> Event:
    return run(b)[-1]


def kinds(decisions: list[Event]) -> list[str]:
    return [
        f"rejected:{d.reason}" if isinstance(d, RequestRejected) else type(d).__name__
        for d in decisions
    ]


# --- admission --------------------------------------------------------------------------


def test_a_request_within_the_limits_is_reserved_with_derived_metadata() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000, reservation_ttl_s=30)
    req = b.request("acme", prompt=10, max_tokens=90)
    (d,) = run(b)
    assert isinstance(d, TokensReserved)
    assert d.tokens == 100 == req.estimated_tokens
    assert d.event_id == derive_id(req.event_id, "reserved")
    assert d.causation_id == req.event_id
    assert d.correlation_id == req.request_id == d.request_id
    assert d.occurred_at == req.occurred_at
    assert d.expires_at == req.occurred_at + timedelta(seconds=30)
    assert d.spec == req.spec


def test_an_unknown_tenant_is_rejected() -> None:
    b = Builder()
    req = b.request("nobody")
    (d,) = run(b)
    assert isinstance(d, RequestRejected)
    assert (d.reason, d.requested_tokens, d.retry_after_s) == ("unknown_tenant", 100, None)
    assert d.event_id == derive_id(req.event_id, "rejected")


def test_the_budget_admits_exactly_what_it_allows() -> None:
    b = Builder()
    b.register("acme", token_budget=300)
    for _ in range(4):
        b.request("acme", prompt=0, max_tokens=100)
    assert kinds(run(b)) == ["TokensReserved"] * 3 + ["rejected:budget"]


def test_budget_retry_after_is_the_start_of_the_next_period() -> None:
    b = Builder(now=datetime(2025, 3, 31, 23, 0, tzinfo=UTC))
    b.register("acme", token_budget=100)
    b.request("acme", prompt=0, max_tokens=100)
    b.request("acme", prompt=0, max_tokens=1)
    d = last_decision(b)
    assert isinstance(d, RequestRejected)
    assert (d.reason, d.retry_after_s) == ("budget", 3600.0)


def test_a_request_larger_than_the_budget_can_never_be_retried() -> None:
    b = Builder()
    b.register("acme", token_budget=99)
    b.request("acme", prompt=0, max_tokens=100)
    d = last_decision(b)
    assert isinstance(d, RequestRejected)
    assert (d.reason, d.retry_after_s) == ("budget", None)


def test_the_budget_is_checked_before_the_rates() -> None:
    b = Builder()
    b.register("acme", token_budget=100, tokens_per_minute=100, requests_per_minute=1)
    b.request("acme", prompt=0, max_tokens=100)
    b.request("acme", prompt=0, max_tokens=1)
    assert kinds(run(b)) == ["TokensReserved", "rejected:budget"]


# --- the rate windows -------------------------------------------------------------------


def test_tokens_leave_the_tpm_window_exactly_60_s_after_admission() -> None:
    b = Builder()
    b.register("acme", token_budget=10_000, tokens_per_minute=150)
    b.request("acme", prompt=0, max_tokens=100)
    b.wait(20).request("acme", prompt=0, max_tokens=50)
    b.wait(39.999_999).request("acme", prompt=0, max_tokens=100)
    b.wait(0.000_001).request("acme", prompt=0, max_tokens=100)
    decisions = run(b)
    assert kinds(decisions) == [
        "TokensReserved",
        "TokensReserved",
        "rejected:tpm",
        "TokensReserved",
    ]
    rejected = decisions[2]
    assert isinstance(rejected, RequestRejected)
    assert rejected.retry_after_s == pytest.approx(0.000_001)


def test_tpm_retry_after_waits_for_enough_tokens_to_leave() -> None:
    b = Builder()
    b.register("acme", token_budget=10_000, tokens_per_minute=100)
    b.request("acme", prompt=0, max_tokens=30)
    b.wait(10).request("acme", prompt=0, max_tokens=30)
    b.wait(10).request("acme", prompt=0, max_tokens=40)
    b.wait(10).request("acme", prompt=0, max_tokens=50)  # needs the first two gone
    d = last_decision(b)
    assert isinstance(d, RequestRejected)
    assert (d.reason, d.retry_after_s) == ("tpm", 40.0)


def test_a_request_larger_than_the_tpm_can_never_be_retried() -> None:
    b = Builder()
    b.register("acme", token_budget=10_000, tokens_per_minute=99)
    b.request("acme", prompt=0, max_tokens=100)
    d = last_decision(b)
    assert isinstance(d, RequestRejected)
    assert (d.reason, d.retry_after_s) == ("tpm", None)


def test_settled_tokens_count_in_the_window_as_used_not_as_reserved() -> None:
    b = Builder()
    b.register("acme", token_budget=10_000, tokens_per_minute=100)
    first = b.request("acme", prompt=0, max_tokens=100)
    b.wait(1).complete(first, prompt=0, completion=30)
    b.wait(1).request("acme", prompt=0, max_tokens=70)
    b.request("acme", prompt=0, max_tokens=1)
    assert kinds(run(b)) == [
        "TokensReserved",
        "ReservationSettled",
        "TokensReserved",
        "rejected:tpm",
    ]


def test_released_tokens_leave_the_window() -> None:
    b = Builder()
    b.register("acme", token_budget=10_000, tokens_per_minute=100)
    first = b.request("acme", prompt=0, max_tokens=100)
    b.wait(1).fail(first)
    b.wait(1).request("acme", prompt=0, max_tokens=100)
    assert kinds(run(b)) == ["TokensReserved", "ReservationReleased", "TokensReserved"]


def test_requests_leave_the_rpm_window_exactly_60_s_after_admission() -> None:
    b = Builder()
    b.register("acme", token_budget=10_000, requests_per_minute=2)
    first = b.request("acme")
    b.wait(1).fail(first)  # a failed request still was a request
    b.wait(9).request("acme")
    b.wait(49.5).request("acme")
    b.wait(0.5).request("acme")
    decisions = run(b)
    assert kinds(decisions) == [
        "TokensReserved",
        "ReservationReleased",
        "TokensReserved",
        "rejected:rpm",
        "TokensReserved",
    ]
    rejected = decisions[3]
    assert isinstance(rejected, RequestRejected)
    assert rejected.retry_after_s == 0.5


def test_concurrency_counts_open_reservations_and_retries_at_the_first_expiry() -> None:
    b = Builder()
    b.register("acme", token_budget=10_000, max_concurrent=2, reservation_ttl_s=100)
    first = b.request("acme")
    b.wait(10).request("acme")
    b.wait(10).request("acme")
    b.wait(10).complete(first)
    b.request("acme")
    decisions = run(b)
    assert kinds(decisions) == [
        "TokensReserved",
        "TokensReserved",
        "rejected:concurrency",
        "ReservationSettled",
        "TokensReserved",
    ]
    rejected = decisions[2]
    assert isinstance(rejected, RequestRejected)
    assert rejected.retry_after_s == 80.0


@pytest.mark.parametrize(
    "limits",
    [
        {"token_budget": 100},
        {"token_budget": 10_000, "tokens_per_minute": 100},
        {"token_budget": 10_000, "max_concurrent": 1},
    ],
)
def test_an_expiry_at_the_moment_of_a_request_frees_its_capacity_first(
    limits: dict[str, int],
) -> None:
    b = Builder()
    b.register("acme", QuotaPolicy.model_validate({"reservation_ttl_s": 10, **limits}))
    first = b.request("acme", prompt=0, max_tokens=100)
    b.wait(10).request("acme", prompt=0, max_tokens=100)
    decisions = run(b)
    assert kinds(decisions) == ["TokensReserved", "ReservationExpired", "TokensReserved"]
    assert decisions[1].causation_id == b.events[-1].event_id
    assert isinstance(decisions[1], ReservationExpired)
    assert decisions[1].request_id == first.request_id


# --- settlement and expiry ----------------------------------------------------------------


def test_a_completion_settles_and_a_second_one_is_ignored() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000)
    req = b.request("acme", prompt=10, max_tokens=90)
    done = b.complete(req, prompt=12, completion=40)
    b.complete(req, prompt=12, completion=40)  # the worker retried: another event id
    b.again(done)
    decisions = run(b)
    assert kinds(decisions) == ["TokensReserved", "ReservationSettled"]
    settled = decisions[1]
    assert isinstance(settled, ReservationSettled)
    assert (settled.reserved, settled.prompt_tokens, settled.completion_tokens) == (100, 12, 40)
    assert settled.event_id == derive_id(done.event_id, "settled")
    state = replay(b.events)[0]
    q = tenant_quota(state, "acme")
    assert q is not None
    assert (q.used, q.reserved, q.remaining, q.open_reservations) == (52, 0, 948, 0)


def test_over_usage_is_clamped_to_the_reservation() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000)
    req = b.request("acme", prompt=10, max_tokens=90)
    b.complete(req, prompt=30, completion=500)
    settled = last_decision(b)
    assert isinstance(settled, ReservationSettled)
    assert (settled.prompt_tokens, settled.completion_tokens, settled.returned) == (30, 70, 0)


def test_a_failure_releases() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000)
    req = b.request("acme")
    failed = b.fail(req)
    released = last_decision(b)
    assert isinstance(released, ReservationReleased)
    assert (released.reserved, released.reason) == (100, failed.reason)


def test_a_tick_expires_reservations_of_every_tenant_oldest_first() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000, reservation_ttl_s=20)
    b.register("globex", token_budget=1_000, reservation_ttl_s=5)
    late = b.request("acme")
    early = b.wait(1).request("globex")
    tick = b.wait(30).tick()
    expired = run(b)[2:]
    assert [(e.tenant_id, e.request_id) for e in expired if isinstance(e, ReservationExpired)] == [
        ("globex", early.request_id),
        ("acme", late.request_id),
    ]
    assert all(e.causation_id == tick.event_id for e in expired)
    assert all(e.occurred_at == tick.occurred_at for e in expired)


def test_a_completion_at_or_after_the_expiry_is_not_charged() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000, reservation_ttl_s=10)
    req = b.request("acme")
    b.wait(10).complete(req, completion=10)
    b.wait(1).complete(req, completion=10)
    assert kinds(run(b)) == ["TokensReserved", "ReservationExpired"]
    q = tenant_quota(replay(b.events)[0], "acme")
    assert q is not None
    assert (q.used, q.reserved, q.remaining) == (0, 0, 1_000)


def test_a_completion_for_an_unknown_request_is_ignored() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000)
    stray = InferenceRequested.model_validate(
        {**b.request("acme").model_dump(), "request_id": "00000000-0000-0000-0000-00000000beef"}
    )
    b.complete(stray)
    assert kinds(run(b)) == ["TokensReserved"]


# --- periods --------------------------------------------------------------------------------


def test_a_reservation_made_last_month_is_charged_to_last_month() -> None:
    b = Builder(now=datetime(2025, 1, 31, 23, 59, 50, tzinfo=UTC))
    b.register("acme", token_budget=100)
    old = b.request("acme", prompt=0, max_tokens=100)
    b.wait(20).complete(old, completion=100)  # settled in February
    b.request("acme", prompt=0, max_tokens=100)
    assert kinds(run(b)) == ["TokensReserved", "ReservationSettled", "TokensReserved"]
    q = tenant_quota(replay(b.events)[0], "acme")
    assert q is not None
    assert q.period_start == datetime(2025, 2, 1, tzinfo=UTC)
    assert (q.used, q.reserved, q.open_reservations) == (0, 100, 1)


def test_a_daily_budget_resets_at_midnight_utc() -> None:
    b = Builder(now=datetime(2025, 5, 10, 23, 59, tzinfo=UTC))
    b.register("acme", token_budget=100, period="day")
    first = b.request("acme", prompt=0, max_tokens=100)
    b.complete(first, completion=100)
    b.request("acme", prompt=0, max_tokens=100)
    b.wait(60).request("acme", prompt=0, max_tokens=100)
    decisions = run(b)
    assert kinds(decisions) == [
        "TokensReserved",
        "ReservationSettled",
        "rejected:budget",
        "TokensReserved",
    ]
    rejected = decisions[2]
    assert isinstance(rejected, RequestRejected)
    assert rejected.retry_after_s == 60.0


def test_changing_the_period_counts_what_the_new_period_holds() -> None:
    b = Builder(now=datetime(2025, 5, 9, 12, 0, tzinfo=UTC))
    b.register("acme", token_budget=150)
    first = b.request("acme", prompt=0, max_tokens=100)
    b.complete(first, completion=100)
    b.wait(86_400).policy("acme", token_budget=150, period="day")  # yesterday's use is not today's
    b.request("acme", prompt=0, max_tokens=100)
    b.policy("acme", token_budget=150, period="month")  # but it is this month's
    b.request("acme", prompt=0, max_tokens=10)
    expected = ["TokensReserved", "ReservationSettled", "TokensReserved", "rejected:budget"]
    assert kinds(run(b)) == expected


# --- idempotence and time -------------------------------------------------------------------


def test_a_duplicated_request_gets_no_second_decision() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000)
    req = b.request("acme")
    b.again(req)
    retry = InferenceRequested.model_validate(
        {**req.model_dump(), "event_id": derive_id(req.event_id, "x")}
    )
    b.again(retry)  # same request id, another event
    b.complete(req)
    b.wait(60).tick()
    b.again(req)  # after it closed, within the horizon
    assert kinds(run(b)) == ["TokensReserved", "ReservationSettled"]


def test_request_ids_are_forgotten_after_the_horizon() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000)
    req = b.request("acme")
    b.complete(req)
    b.wait(100).tick()
    b.again(req)
    assert kinds(run(b, QuotaState(dedup_horizon_s=100))) == [
        "TokensReserved",
        "ReservationSettled",
    ]
    assert kinds(run(b, QuotaState(dedup_horizon_s=99))) == [
        "TokensReserved",
        "ReservationSettled",
        "TokensReserved",
    ]


def test_a_request_id_is_remembered_while_its_reservation_is_open() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000, reservation_ttl_s=3_600)
    req = b.request("acme")
    b.wait(1_000).tick()
    b.again(req)
    assert kinds(run(b, QuotaState(dedup_horizon_s=10))) == ["TokensReserved"]


def test_a_duplicated_old_policy_does_not_undo_a_newer_one() -> None:
    b = Builder()
    old = b.register("acme", token_budget=100)
    b.policy("acme", token_budget=1_000)
    b.again(old)
    b.request("acme", prompt=0, max_tokens=500)
    assert kinds(run(b)) == ["TokensReserved"]


def test_decisions_are_stamped_with_the_partition_time_when_a_clock_lags() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000, reservation_ttl_s=10)
    b.wait(5).tick()
    req = b.wait(-2).request("acme")  # its producer's clock is 2 s behind
    (d,) = run(b)
    assert isinstance(d, TokensReserved)
    assert d.occurred_at == req.occurred_at + timedelta(seconds=2)
    assert d.expires_at == d.occurred_at + timedelta(seconds=10)


def test_time_zones_do_not_matter() -> None:
    b = Builder(now=datetime(2025, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9))))
    b.register("acme", token_budget=100, period="day")
    b.request("acme", prompt=0, max_tokens=100)
    b.wait(1).request("acme", prompt=0, max_tokens=100)
    d = last_decision(b)
    assert isinstance(d, RequestRejected)
    assert d.retry_after_s == 86_400 - 1  # 00:00 UTC, the next UTC day


def test_replay_decides_byte_for_byte_the_same() -> None:
    b = Builder()
    b.register("acme", token_budget=300, tokens_per_minute=200, reservation_ttl_s=5)
    for i in range(6):
        req = b.wait(2).request("acme", prompt=0, max_tokens=60)
        if i % 2:
            b.complete(req, completion=20)
    b.wait(30).tick()
    first, second = run(b), run(b)
    assert [d.model_dump_json() for d in first] == [d.model_dump_json() for d in second]


# --- the read model -------------------------------------------------------------------------


def test_tenant_quota_reads_windows_at_a_later_time() -> None:
    b = Builder(now=datetime(2025, 5, 9, 12, 0, tzinfo=UTC))
    b.register("acme", token_budget=1_000, tokens_per_minute=500, requests_per_minute=5)
    b.request("acme", prompt=0, max_tokens=100)
    b.wait(30).request("acme", prompt=0, max_tokens=50)
    state = replay(b.events)[0]
    q = tenant_quota(state, "acme")
    later = tenant_quota(state, "acme", b.now + timedelta(seconds=30))
    assert q is not None
    assert later is not None
    assert (q.window_tokens, q.window_requests, q.reserved) == (150, 2, 150)
    assert (later.window_tokens, later.window_requests, later.reserved) == (50, 1, 150)
    assert tenant_quota(state, "nobody") is None
    with pytest.raises(ValueError, match="moved past"):
        tenant_quota(state, "acme", b.now - timedelta(seconds=1))


def test_decide_reads_and_evolve_returns_the_state() -> None:
    b = Builder()
    b.register("acme", token_budget=1_000)
    req = b.request("acme")
    state = replay(b.events[:1])[0]
    before = state.copy()
    outs = decide(state, req)
    assert state == before
    assert evolve(state, req) is state
    assert len(outs) == 1
