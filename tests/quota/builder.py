"""Input events for quota tests: a small builder, and hypothesis scenarios built with it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from hypothesis import strategies as st

from events import (
    ClockTicked,
    Event,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    QuotaPolicy,
    QuotaPolicySet,
    TenantRegistered,
)
from events.model import RequestSpec

E = TypeVar("E", bound=Event)

#: A minute before a day and a month end, so that scenarios cross both.
T0 = datetime(2025, 1, 31, 23, 59, tzinfo=UTC)
KEY_HASH = "0" * 64
TENANTS = ("acme", "globex", "initech")
UNKNOWN = "umbrella"  # never registered


@dataclass
class Builder:
    """Makes input events with deterministic ids on a clock that only moves when told."""

    now: datetime = T0
    events: list[Event] = field(default_factory=list)
    requests: list[InferenceRequested] = field(default_factory=list)
    _ids: int = 0

    def _id(self) -> uuid.UUID:
        self._ids += 1
        return uuid.UUID(int=self._ids)

    def _add(self, event: E) -> E:
        self.events.append(event)
        return event

    def wait(self, seconds: float) -> Builder:
        self.now += timedelta(seconds=seconds)
        return self

    def register(
        self, tenant: str, policy: QuotaPolicy | None = None, **limits: Any
    ) -> TenantRegistered:
        return self._add(
            TenantRegistered(
                event_id=self._id(),
                occurred_at=self.now,
                tenant_id=tenant,
                name=tenant,
                api_key_hash=KEY_HASH,
                policy=policy or QuotaPolicy(**limits),
            )
        )

    def policy(
        self, tenant: str, policy: QuotaPolicy | None = None, **limits: Any
    ) -> QuotaPolicySet:
        return self._add(
            QuotaPolicySet(
                event_id=self._id(),
                occurred_at=self.now,
                tenant_id=tenant,
                policy=policy or QuotaPolicy(**limits),
            )
        )

    def request(self, tenant: str, prompt: int = 10, max_tokens: int = 90) -> InferenceRequested:
        event = InferenceRequested(
            event_id=self._id(),
            occurred_at=self.now,
            tenant_id=tenant,
            request_id=self._id(),
            spec=RequestSpec(model="smollm2", prompt="hello", max_tokens=max_tokens),
            estimated_prompt_tokens=prompt,
        )
        self.requests.append(event)
        return self._add(event)

    def complete(
        self, request: InferenceRequested, prompt: int | None = None, completion: int = 0
    ) -> InferenceCompleted:
        return self._add(
            InferenceCompleted(
                event_id=self._id(),
                occurred_at=self.now,
                tenant_id=request.tenant_id,
                request_id=request.request_id,
                model=request.spec.model,
                prompt_tokens=request.estimated_prompt_tokens if prompt is None else prompt,
                completion_tokens=completion,
                latency_ms=12.5,
            )
        )

    def fail(self, request: InferenceRequested) -> InferenceFailed:
        return self._add(
            InferenceFailed(
                event_id=self._id(),
                occurred_at=self.now,
                tenant_id=request.tenant_id,
                request_id=request.request_id,
                model=request.spec.model,
                reason="model crashed",
            )
        )

    def tick(self) -> ClockTicked:
        return self._add(
            ClockTicked(event_id=self._id(), occurred_at=self.now, tenant_id="system", partition=0)
        )

    def again(self, event: Event) -> Event:
        """The same event once more (a duplicate on the log)."""
        return self._add(event)


# --- hypothesis scenarios -------------------------------------------------------------------

policies = st.builds(
    QuotaPolicy,
    token_budget=st.integers(0, 5_000),
    period=st.sampled_from(["month", "day"]),
    tokens_per_minute=st.none() | st.integers(1, 1_500),
    requests_per_minute=st.none() | st.integers(1, 8),
    max_concurrent=st.none() | st.integers(1, 4),
    reservation_ttl_s=st.integers(1, 120),
)
_tenant = st.sampled_from((*TENANTS, *TENANTS, UNKNOWN))
_pick = st.integers(0, 10_000)

Op = tuple[Any, ...]
ops = st.one_of(
    st.tuples(st.just("request"), _tenant, st.integers(0, 60), st.integers(1, 120)),
    st.tuples(st.just("request"), _tenant, st.integers(0, 60), st.integers(1, 120)),
    st.tuples(st.just("complete"), _pick, st.integers(0, 100), st.integers(0, 150)),
    st.tuples(st.just("fail"), _pick),
    st.tuples(st.just("tick")),
    st.tuples(st.just("dup"), _pick),
    st.tuples(st.just("wait"), st.integers(-1_500, 40_000)),
    st.tuples(st.just("wait"), st.integers(0, 3_000)),
    # whole seconds, so that windows and TTLs end exactly on an event
    st.tuples(
        st.just("wait"), st.sampled_from([1, 2, 5, 10, 15, 20, 30, 60]).map(lambda s: s * 1000)
    ),
    st.tuples(st.just("policy"), st.sampled_from(TENANTS), policies),
)


def _recent(requests: list[InferenceRequested], pick: int) -> InferenceRequested:
    """Mostly one of the last few requests (those are open), sometimes any."""
    if pick % 5 == 0:
        return requests[pick % len(requests)]
    return requests[-1 - pick % min(len(requests), 4)]


def build(
    initial: list[QuotaPolicy],
    steps: list[Op],
    *,
    policy_changes: bool = True,
    duplicates: bool = True,
) -> list[Event]:
    """The input log of a scenario: the tenants registered, then ``steps``.

    ``wait`` moves the producers' clock by milliseconds (backwards a little when negative:
    clocks disagree).
    """
    b = Builder()
    for tenant, policy in zip(TENANTS, initial, strict=False):
        b.register(tenant, policy)
    for step in steps:
        kind: Literal["request", "complete", "fail", "tick", "dup", "wait", "policy"] = step[0]
        if kind == "request":
            b.request(step[1], prompt=step[2], max_tokens=step[3])
        elif kind == "complete" and b.requests:
            b.complete(_recent(b.requests, step[1]), step[2], step[3])
        elif kind == "fail" and b.requests:
            b.fail(_recent(b.requests, step[1]))
        elif kind == "tick":
            b.tick()
        elif kind == "dup" and duplicates and b.events:
            b.again(b.events[step[1] % len(b.events)])
        elif kind == "wait":
            b.wait(step[1] / 1000)
        elif kind == "policy" and policy_changes:
            b.policy(step[1], step[2])
    return b.events


scenarios = st.tuples(
    st.lists(policies, min_size=3, max_size=3), st.lists(ops, min_size=10, max_size=100)
)
