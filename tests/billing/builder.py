"""A small builder of realistic event logs for the billing tests and the apply benchmark.

Each request becomes the events the real agents write, on the streams they write them to:
``InferenceRequested``/``InferenceCompleted``/``InferenceFailed`` on the tenant's ``requests``
partition, the quota agent's decisions on the same ``quota`` partition, prices on ``catalog``.
:meth:`LogBuilder.items` then cuts the streams into ``(stream, offset, event)`` in an order a
projection reading all streams at once could see.
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from events import (
    Event,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    PriceSet,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TokensReserved,
    derive_id,
)
from events.model import SYSTEM_TENANT, RequestSpec
from streams.topics import Topology

Item = tuple[str, int, Event]
Outcome = Literal["settled", "rejected", "failed", "expired", "pending", "completed"]
START = datetime(2025, 1, 30, 22, 0, tzinfo=UTC)


@dataclass
class LogBuilder:
    partitions: int = 2
    now: datetime = START
    topology: Topology = field(init=False)
    streams: dict[str, list[Event]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topology = Topology(self.partitions, prefix="t-")

    # --- time and streams -------------------------------------------------------------

    def tick(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def _append(self, stream: str, event: Event) -> None:
        self.streams.setdefault(stream, []).append(event)

    def _requests(self, event: Event) -> None:
        self._append(self.topology.requests.stream_for(event.tenant_id), event)

    def _quota(self, event: Event) -> None:
        self._append(self.topology.quota.stream_for(event.tenant_id), event)

    # --- facts ------------------------------------------------------------------------

    def price(
        self,
        model: str,
        prompt: str,
        completion: str,
        at: datetime | None = None,
        currency: str = "USD",
    ) -> PriceSet:
        event = PriceSet(
            tenant_id=SYSTEM_TENANT,
            occurred_at=at or self.now,
            model=model,
            prompt_per_1k=Decimal(prompt),
            completion_per_1k=Decimal(completion),
            currency=currency,
        )
        self._append(self.topology.catalog.stream(0), event)
        return event

    def request(
        self,
        tenant: str,
        model: str,
        outcome: Outcome = "settled",
        prompt_tokens: int = 120,
        completion_tokens: int = 80,
        max_tokens: int = 256,
    ) -> uuid.UUID:
        """One request through to ``outcome``; returns its id. Time moves on a little."""
        rid = uuid.uuid4()
        spec = RequestSpec(model=model, prompt="x" * 16, max_tokens=max_tokens)
        estimate = prompt_tokens + 4
        requested = InferenceRequested(
            tenant_id=tenant,
            occurred_at=self.now,
            request_id=rid,
            spec=spec,
            estimated_prompt_tokens=estimate,
        )
        self._requests(requested)
        cause = requested.event_id
        reserve = estimate + max_tokens
        at = self.tick(0.001)
        if outcome == "rejected":
            self._quota(
                RequestRejected(
                    event_id=derive_id(cause, "decision"),
                    causation_id=cause,
                    tenant_id=tenant,
                    occurred_at=at,
                    request_id=rid,
                    reason="budget",
                    detail="over budget",
                    requested_tokens=reserve,
                )
            )
            return rid
        self._quota(
            TokensReserved(
                event_id=derive_id(cause, "decision"),
                causation_id=cause,
                tenant_id=tenant,
                occurred_at=at,
                request_id=rid,
                tokens=reserve,
                expires_at=at + timedelta(seconds=300),
                spec=spec,
            )
        )
        if outcome == "pending":
            return rid
        if outcome == "expired":
            self._quota(
                ReservationExpired(
                    event_id=derive_id(cause, "expired"),
                    tenant_id=tenant,
                    occurred_at=at + timedelta(seconds=300),
                    request_id=rid,
                    reserved=reserve,
                )
            )
            return rid
        at = self.tick(0.05)
        if outcome == "failed":
            failed = InferenceFailed(
                tenant_id=tenant, occurred_at=at, request_id=rid, model=model, reason="oom"
            )
            self._requests(failed)
            self._quota(
                ReservationReleased(
                    event_id=derive_id(failed.event_id, "release"),
                    causation_id=failed.event_id,
                    tenant_id=tenant,
                    occurred_at=at,
                    request_id=rid,
                    reserved=reserve,
                    reason="oom",
                )
            )
            return rid
        completed = InferenceCompleted(
            tenant_id=tenant,
            occurred_at=at,
            request_id=rid,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=50.0,
        )
        self._requests(completed)
        if outcome == "settled":
            self._quota(
                ReservationSettled(
                    event_id=derive_id(completed.event_id, "settle"),
                    causation_id=completed.event_id,
                    tenant_id=tenant,
                    occurred_at=at,
                    request_id=rid,
                    model=model,
                    reserved=reserve,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                )
            )
        return rid

    def traffic(
        self,
        rng: random.Random,
        n: int,
        tenants: Sequence[str] = ("acme", "globex", "initech"),
        models: Sequence[str] = ("llama-8b", "smollm2"),
        gap_s: float = 60.0,
    ) -> None:
        """``n`` requests with a realistic mix of outcomes, ``gap_s`` apart on average."""
        outcomes: list[Outcome] = ["settled", "rejected", "failed", "expired", "pending"]
        for _ in range(n):
            outcome = rng.choices(outcomes, weights=(80, 8, 5, 5, 2))[0]
            self.request(
                rng.choice(tenants),
                rng.choice(models),
                outcome,
                prompt_tokens=rng.randint(1, 2000),
                completion_tokens=rng.randint(0, 512),
                max_tokens=512,
            )
            self.tick(rng.expovariate(1 / gap_s))

    # --- reading it back --------------------------------------------------------------

    def items(self, rng: random.Random | None = None) -> list[Item]:
        """Every event with its stream and offset. Streams are merged by event time, or, given
        ``rng``, interleaved at random; each stream stays in offset order."""
        per_stream = [
            [(stream, offset, event) for offset, event in enumerate(events)]
            for stream, events in sorted(self.streams.items())
        ]
        if rng is None:
            return list(heapq.merge(*per_stream, key=lambda item: item[2].occurred_at))
        merged: list[Item] = []
        cursors = [0] * len(per_stream)
        live = [i for i, s in enumerate(per_stream) if s]
        while live:
            i = rng.choice(live)
            merged.append(per_stream[i][cursors[i]])
            cursors[i] += 1
            if cursors[i] == len(per_stream[i]):
                live.remove(i)
        return merged

    def events(self) -> list[Event]:
        return [event for events in self.streams.values() for event in events]


def split(items: Sequence[Item], cuts: Sequence[int]) -> list[list[Item]]:
    """``items`` cut before each index in ``cuts``."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(items)}), len(items)]
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds)]
