"""A naive model of the quota rules, written from the spec, for checking ``decide``.

It keeps every reservation ever made in a list and recomputes every sum from scratch: slow,
obviously right, and independent of the windows, counters and heaps of the real state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from events import (
    Event,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    QuotaPolicy,
    QuotaPolicySet,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
    derive_id,
)
from streams.quota.timeline import WINDOW_US, from_us, period_bounds, to_us


@dataclass
class Res:
    tenant: str
    request_id: uuid.UUID
    t: int
    tokens: int
    expires: int
    seq: int
    status: str = "open"  # settled | released | expired
    charged: int = 0

    def counted(self) -> int:
        """Tokens this admission counts in the rate window."""
        return {"open": self.tokens, "settled": self.charged}.get(self.status, 0)


@dataclass
class Reference:
    horizon_s: int = 600
    now: int = -(2**62)
    policies: dict[str, QuotaPolicy] = field(default_factory=dict)
    policy_events: set[uuid.UUID] = field(default_factory=set)
    reservations: list[Res] = field(default_factory=list)
    last_seen: dict[uuid.UUID, int] = field(default_factory=dict)  # request id -> second

    def open_res(self, tenant: str, request_id: uuid.UUID) -> Res | None:
        for r in self.reservations:
            if r.tenant == tenant and r.request_id == request_id and r.status == "open":
                return r
        return None

    def step(self, e: Event) -> list[Event]:
        self.now = max(self.now, to_us(e.occurred_at))
        now = self.now
        stamp = from_us(now)
        outs: list[Event] = []
        due = sorted(
            (r for r in self.reservations if r.status == "open" and r.expires <= now),
            key=lambda r: (r.expires, r.seq),  # ties: in order of admission
        )
        for r in due:
            r.status = "expired"
            self.last_seen[r.request_id] = now // 1_000_000
            outs.append(
                ReservationExpired(
                    event_id=derive_id(e.event_id, f"expired:{r.request_id}"),
                    occurred_at=stamp,
                    tenant_id=r.tenant,
                    causation_id=e.event_id,
                    correlation_id=r.request_id,
                    request_id=r.request_id,
                    reserved=r.tokens,
                )
            )
        if isinstance(e, TenantRegistered | QuotaPolicySet):
            if e.event_id not in self.policy_events:
                self.policy_events.add(e.event_id)
                self.policies[e.tenant_id] = e.policy
        elif isinstance(e, InferenceRequested):
            out = self.request(e, now)
            if out is not None:
                outs.append(out)
        elif isinstance(e, InferenceCompleted | InferenceFailed):
            res = self.open_res(e.tenant_id, e.request_id)
            if res is not None:
                outs.append(self.close(e, res, now))
        return outs

    def quota(self, tenant: str) -> dict[str, int] | None:
        """What :class:`streams.quota.TenantQuota` should say now (the fields it computes)."""
        policy = self.policies.get(tenant)
        if policy is None:
            return None
        now = self.now
        mine = [r for r in self.reservations if r.tenant == tenant]
        start, _ = period_bounds(policy.period, now)
        in_period = [r for r in mine if period_bounds(policy.period, r.t)[0] == start]
        window = [r for r in mine if now - WINDOW_US < r.t <= now]
        open_now = [r for r in mine if r.status == "open"]
        return {
            "used": sum(r.charged for r in in_period if r.status == "settled"),
            "reserved": sum(r.tokens for r in in_period if r.status == "open"),
            "window_tokens": sum(r.counted() for r in window),
            "window_requests": len(window),
            "open_reservations": len(open_now),
            "open_tokens": sum(r.tokens for r in open_now),
        }

    def remembered(self, request_id: uuid.UUID, now: int) -> bool:
        second = self.last_seen.get(request_id)
        return second is not None and second >= (now - self.horizon_s * 1_000_000) // 1_000_000

    def request(self, e: InferenceRequested, now: int) -> Event | None:
        if self.remembered(e.request_id, now) or self.open_res(e.tenant_id, e.request_id):
            return None
        self.last_seen[e.request_id] = now // 1_000_000
        requested = e.estimated_prompt_tokens + e.spec.max_tokens
        policy = self.policies.get(e.tenant_id)
        if policy is None:
            return self.reject(e, now, "unknown_tenant", requested, None)
        mine = [r for r in self.reservations if r.tenant == e.tenant_id]
        start, end = period_bounds(policy.period, now)
        in_period = [r for r in mine if period_bounds(policy.period, r.t)[0] == start]
        used = sum(r.charged for r in in_period if r.status == "settled")
        reserved = sum(r.tokens for r in in_period if r.status == "open")
        if used + reserved + requested > policy.token_budget:
            retry = (end - now) / 1e6 if requested <= policy.token_budget else None
            return self.reject(e, now, "budget", requested, retry)
        window = sorted(
            (r for r in mine if now - WINDOW_US < r.t <= now),
            key=lambda r: (r.t, r.seq),
        )
        tpm = policy.tokens_per_minute
        counted = sum(r.counted() for r in window)
        if tpm is not None and counted + requested > tpm:
            retry = None
            if requested <= tpm:
                left = counted
                for r in window:
                    left -= r.counted()
                    if left + requested <= tpm:
                        retry = (r.t + WINDOW_US - now) / 1e6
                        break
            return self.reject(e, now, "tpm", requested, retry)
        rpm = policy.requests_per_minute
        if rpm is not None and len(window) + 1 > rpm:
            leaving = window[len(window) - rpm]
            return self.reject(e, now, "rpm", requested, (leaving.t + WINDOW_US - now) / 1e6)
        open_now = [r for r in mine if r.status == "open"]
        if policy.max_concurrent is not None and len(open_now) >= policy.max_concurrent:
            retry = (min(r.expires for r in open_now) - now) / 1e6
            return self.reject(e, now, "concurrency", requested, retry)
        expires = now + policy.reservation_ttl_s * 1_000_000
        seq = len(self.reservations)
        self.reservations.append(Res(e.tenant_id, e.request_id, now, requested, expires, seq))
        return TokensReserved(
            event_id=derive_id(e.event_id, "reserved"),
            occurred_at=from_us(now),
            tenant_id=e.tenant_id,
            causation_id=e.event_id,
            correlation_id=e.request_id,
            request_id=e.request_id,
            tokens=requested,
            expires_at=from_us(now) + timedelta(seconds=policy.reservation_ttl_s),
            spec=e.spec,
        )

    def reject(
        self, e: InferenceRequested, now: int, reason: str, requested: int, retry: float | None
    ) -> RequestRejected:
        return RequestRejected.model_validate(
            {
                "event_id": derive_id(e.event_id, "rejected"),
                "occurred_at": from_us(now),
                "tenant_id": e.tenant_id,
                "causation_id": e.event_id,
                "correlation_id": e.request_id,
                "request_id": e.request_id,
                "reason": reason,
                "requested_tokens": requested,
                "retry_after_s": retry,
            }
        )

    def close(self, e: InferenceCompleted | InferenceFailed, r: Res, now: int) -> Event:
        self.last_seen[r.request_id] = now // 1_000_000
        if isinstance(e, InferenceFailed):
            r.status = "released"
            return ReservationReleased(
                event_id=derive_id(e.event_id, "released"),
                occurred_at=from_us(now),
                tenant_id=e.tenant_id,
                causation_id=e.event_id,
                correlation_id=e.request_id,
                request_id=e.request_id,
                reserved=r.tokens,
                reason=e.reason,
            )
        prompt = min(e.prompt_tokens, r.tokens)
        completion = min(e.completion_tokens, r.tokens - prompt)
        r.status, r.charged = "settled", prompt + completion
        return ReservationSettled(
            event_id=derive_id(e.event_id, "settled"),
            occurred_at=from_us(now),
            tenant_id=e.tenant_id,
            causation_id=e.event_id,
            correlation_id=e.request_id,
            request_id=e.request_id,
            model=e.model,
            reserved=r.tokens,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
