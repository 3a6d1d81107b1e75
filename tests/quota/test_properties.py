"""Properties of the quota rules on random event sequences (hypothesis)."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    Event,
    QuotaPolicy,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TokensReserved,
)
from streams.quota import QuotaState, decide, evolve, fold, replay, tenant_quota
from streams.quota.timeline import WINDOW_US, period_bounds, to_us
from tests.quota.builder import TENANTS, Builder, build, policies, scenarios
from tests.quota.reference import Reference

RUNS = settings(max_examples=300, deadline=None)
FEWER = settings(max_examples=150, deadline=None)
Scenario = tuple[list[QuotaPolicy], list[tuple[Any, ...]]]


def comparable(event: Event) -> dict[str, Any]:
    return event.model_dump(exclude={"detail"})


@RUNS
@given(scenarios)
def test_decisions_are_those_of_the_reference_model(scenario: Scenario) -> None:
    """Every decision (ids, times, reasons, retry_after) is what the naive model decides, and
    the read model says what the naive model counts."""
    state, ref = QuotaState(), Reference()
    for event in build(*scenario):
        outs = decide(state, event)
        assert [comparable(o) for o in outs] == [comparable(x) for x in ref.step(event)]
        evolve(state, event)
        for out in outs:
            evolve(state, out)
        for tenant in TENANTS:
            q = tenant_quota(state, tenant)
            expected = ref.quota(tenant)
            assert (q is None) == (expected is None)
            if q is not None and expected is not None:
                assert {k: getattr(q, k) for k in expected} == expected


@RUNS
@given(scenarios)
def test_limits_hold_after_every_event(scenario: Scenario) -> None:
    """With fixed policies: used + reserved <= budget; windows and concurrency within limits."""
    events = build(*scenario, policy_changes=False)
    state = QuotaState()
    for event in events:
        outs = decide(state, event)
        evolve(state, event)
        for out in outs:
            evolve(state, out)
        for tenant in TENANTS:
            q = tenant_quota(state, tenant)
            if q is None:
                continue  # not registered yet
            assert q.used + q.reserved <= q.budget
            assert q.remaining == q.budget - q.used - q.reserved
            assert q.tokens_per_minute is None or q.window_tokens <= q.tokens_per_minute
            assert q.requests_per_minute is None or q.window_requests <= q.requests_per_minute
            assert q.max_concurrent is None or q.open_reservations <= q.max_concurrent


@RUNS
@given(scenarios)
def test_limits_hold_in_every_window_of_the_decision_log(scenario: Scenario) -> None:
    """Checked from the quota topic alone: no 60 s window, period or moment over a limit."""
    initial, _ = scenario
    events = build(*scenario, policy_changes=False)
    policy = dict(zip(TENANTS, initial, strict=True))
    _, decisions = replay(events)
    admitted: dict[str, list[TokensReserved]] = defaultdict(list)
    final: dict[uuid.UUID, int] = {}  # tokens an admission counts in the end
    open_now: Counter[str] = Counter()
    for d in decisions:
        if isinstance(d, TokensReserved):
            admitted[d.tenant_id].append(d)
            final[d.request_id] = d.tokens
            open_now[d.tenant_id] += 1
            limit = policy[d.tenant_id].max_concurrent
            assert limit is None or open_now[d.tenant_id] <= limit
        elif isinstance(d, ReservationSettled | ReservationReleased | ReservationExpired):
            open_now[d.tenant_id] -= 1
            final[d.request_id] = (
                d.prompt_tokens + d.completion_tokens if isinstance(d, ReservationSettled) else 0
            )
    for tenant, reservations in admitted.items():
        p = policy[tenant]
        times = [to_us(r.occurred_at) for r in reservations]
        for t in times:
            window = [
                r for r, t2 in zip(reservations, times, strict=True) if t - WINDOW_US < t2 <= t
            ]
            assert p.requests_per_minute is None or len(window) <= p.requests_per_minute
            tokens = sum(final[r.request_id] for r in window)
            assert p.tokens_per_minute is None or tokens <= p.tokens_per_minute
        per_period: Counter[int] = Counter()
        for r, t in zip(reservations, times, strict=True):
            per_period[period_bounds(p.period, t)[0]] += final[r.request_id]
        assert all(total <= p.token_budget for total in per_period.values())


@RUNS
@given(scenarios)
def test_reserved_tokens_are_conserved(scenario: Scenario) -> None:
    """reserved = settled + released + expired + still open; charged <= reserved."""
    state, decisions = replay(build(*scenario))
    reserved = sum(d.tokens for d in decisions if isinstance(d, TokensReserved))
    closed = sum(
        d.reserved
        for d in decisions
        if isinstance(d, ReservationSettled | ReservationReleased | ReservationExpired)
    )
    still_open = sum(t.open_tokens for t in state.tenants.values())
    assert reserved == closed + still_open
    assert still_open == sum(r.tokens for t in state.tenants.values() for r in t.open.values())
    for d in decisions:
        if isinstance(d, ReservationSettled):
            assert 0 <= d.prompt_tokens + d.completion_tokens <= d.reserved


@RUNS
@given(scenarios)
def test_folding_twice_gives_the_same_state(scenario: Scenario) -> None:
    events = build(*scenario)
    state1, decisions1 = replay(events)
    state2, decisions2 = replay(events)
    assert state1 == state2
    assert decisions1 == decisions2
    # the log with the decisions in it folds (without deciding) to the same state
    log: list[Event] = []
    probe = QuotaState()
    for event in events:
        outs = decide(probe, event)
        evolve(probe, event)
        for out in outs:
            evolve(probe, out)
        log += [event, *outs]
    assert fold(log) == state1


@FEWER
@given(scenarios)
def test_decide_does_not_change_the_state(scenario: Scenario) -> None:
    state = QuotaState()
    for event in build(*scenario):
        before = state.copy()
        outs = decide(state, event)
        assert state == before
        evolve(state, event)
        for out in outs:
            evolve(state, out)


def _per_request(decisions: list[Event]) -> Counter[tuple[Any, ...]]:
    keys: Counter[tuple[Any, ...]] = Counter()
    for d in decisions:
        if isinstance(d, TokensReserved):
            keys[("reserved", d.request_id, d.tokens)] += 1
        elif isinstance(d, RequestRejected):
            keys[("rejected", d.request_id, d.reason)] += 1
        elif isinstance(d, ReservationSettled):
            keys[("settled", d.request_id, d.prompt_tokens, d.completion_tokens)] += 1
        elif isinstance(d, ReservationReleased | ReservationExpired):
            keys[(type(d).__name__, d.request_id)] += 1
    return keys


@RUNS
@given(scenarios)
def test_a_duplicated_input_never_yields_a_second_decision(scenario: Scenario) -> None:
    """Within the horizon, the log with duplicates decides what the log without them does."""
    with_dups = build(*scenario)
    seen: set[uuid.UUID] = set()
    without: list[Event] = []
    for event in with_dups:
        if event.event_id not in seen:
            seen.add(event.event_id)
            without.append(event)
    _, decisions = replay(with_dups, QuotaState(dedup_horizon_s=86_400))
    _, expected = replay(without, QuotaState(dedup_horizon_s=86_400))
    per_request = _per_request(decisions)
    assert per_request == _per_request(expected)
    assert max(per_request.values(), default=1) == 1
    opened = Counter(d.request_id for d in decisions if isinstance(d, TokensReserved))
    decided = Counter(
        d.request_id for d in decisions if isinstance(d, TokensReserved | RequestRejected)
    )
    closed = Counter(
        d.request_id
        for d in decisions
        if isinstance(d, ReservationSettled | ReservationReleased | ReservationExpired)
    )
    assert max(decided.values(), default=1) == 1
    assert all(opened[r] == 1 for r in closed)


@RUNS
@given(
    k=st.integers(0, 12),
    m=st.integers(0, 20),
    prompt=st.integers(0, 200),
    max_tokens=st.integers(1, 300),
    slack=st.floats(0, 0.999),
    spread_ms=st.integers(0, 4_000),
)
def test_a_budget_for_k_admits_exactly_k(
    k: int, m: int, prompt: int, max_tokens: int, slack: float, spread_ms: int
) -> None:
    size = prompt + max_tokens
    b = Builder()
    b.register("acme", token_budget=k * size + int(slack * size))
    for _ in range(m):
        b.request("acme", prompt=prompt, max_tokens=max_tokens)
        b.wait(spread_ms / 1000 / max(m, 1))
    _, decisions = replay(b.events)
    assert sum(isinstance(d, TokensReserved) for d in decisions) == min(k, m)
    rejected = [d for d in decisions if isinstance(d, RequestRejected)]
    assert len(rejected) == max(0, m - k)
    assert all(d.reason == "budget" for d in rejected)


@RUNS
@given(
    k=st.integers(1, 12),
    m=st.integers(0, 20),
    size=st.integers(1, 300),
    limit=st.sampled_from(["tpm", "rpm", "concurrency"]),
    spread_ms=st.integers(0, 59_000),
)
def test_a_rate_limit_for_k_admits_exactly_k_per_window(
    k: int, m: int, size: int, limit: str, spread_ms: int
) -> None:
    """M identical requests within one 60 s window: exactly K pass each rate limit."""
    limits: dict[str, Any] = {
        "tpm": {"tokens_per_minute": k * size},
        "rpm": {"requests_per_minute": k},
        "concurrency": {"max_concurrent": k, "reservation_ttl_s": 3_600},
    }[limit]
    b = Builder()
    b.register("acme", token_budget=10**9, **limits)
    for _ in range(m):
        b.request("acme", prompt=0, max_tokens=size)
        b.wait(spread_ms / 1000 / max(m, 1))
    _, decisions = replay(b.events)
    assert sum(isinstance(d, TokensReserved) for d in decisions) == min(k, m)
    reasons = {d.reason for d in decisions if isinstance(d, RequestRejected)}
    assert reasons <= {limit}


@FEWER
@given(st.lists(policies, min_size=3, max_size=3), st.data())
def test_replay_is_deterministic_whatever_the_horizon(
    initial: list[QuotaPolicy], data: st.DataObject
) -> None:
    """A short horizon forgets ids, but two replays still decide exactly alike."""
    steps = data.draw(st.lists(st.tuples(st.just("dup"), st.integers(0, 50)), max_size=5))
    events = build(initial, steps)
    a = replay(events, QuotaState(dedup_horizon_s=1))
    b = replay(events, QuotaState(dedup_horizon_s=1))
    assert a == b
