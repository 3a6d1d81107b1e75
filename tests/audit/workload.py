"""A realistic quotaflow log, simulated in event time.

:func:`simulate` plays tenants sending requests, the quota agent deciding them (the pure
``decide`` / ``evolve`` per partition, exactly as the agent) and an inference service
answering each reservation after a latency: mostly completions (a few over-using their
reservation), some failures, some never answered (they expire when a later input, or the
final clock tick, passes their deadline). Prices are on ``catalog``, with a price change
halfway through. The run starts a little before a month ends, so it spans two billing periods.

The real-server tests publish only the *inputs* (what clients, admins and the inference
service write) and let the real quota agent decide; the benchmark publishes the decisions
too. Either way the log is one a correct system writes.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from events import (
    ClockTicked,
    Event,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    PriceSet,
    QuotaPolicy,
    TenantRegistered,
    TokensReserved,
)
from events.model import SYSTEM_TENANT, RequestSpec
from streams.quota import QuotaState, decide, evolve
from streams.topics import Topology, partition_for

T0 = datetime(2026, 1, 31, 23, 59, 0, tzinfo=UTC)
Push = Callable[[datetime, Event], None]
MODELS = ("echo", "smollm2")


@dataclass
class World:
    topology: Topology
    streams: dict[str, list[Event]] = field(default_factory=dict)
    tenants: list[str] = field(default_factory=list)
    end: datetime = T0

    def add(self, stream: str, event: Event) -> None:
        self.streams.setdefault(stream, []).append(event)

    def inputs(self) -> dict[str, list[Event]]:
        """What clients, admins, the catalog and the inference service write."""
        quota = set(self.topology.quota.streams)
        return {s: evs for s, evs in self.streams.items() if s not in quota}

    def decisions(self) -> dict[str, list[Event]]:
        quota = set(self.topology.quota.streams)
        return {s: evs for s, evs in self.streams.items() if s in quota}

    @property
    def events(self) -> int:
        return sum(len(evs) for evs in self.streams.values())


def policy_for(rng: random.Random, i: int) -> QuotaPolicy:
    """Tenant 0 runs out of budget early, tenant 1 hits its tokens-per-minute limit; the
    others get a random mix."""
    if i == 0:
        return QuotaPolicy(token_budget=8_000, reservation_ttl_s=30)
    if i == 1:
        return QuotaPolicy(token_budget=10**9, tokens_per_minute=4_000, reservation_ttl_s=30)
    return QuotaPolicy(
        token_budget=rng.choice([20_000, 200_000, 10**9]),
        period=rng.choice(["month", "month", "day"]),
        tokens_per_minute=rng.choice([None, None, 60_000]),
        requests_per_minute=rng.choice([None, 600]),
        max_concurrent=rng.choice([None, 60]),
        reservation_ttl_s=30,
    )


def simulate(
    topology: Topology,
    rng: random.Random,
    *,
    tenants: int = 6,
    requests: int = 300,
    gap_ms: int = 200,
    start: datetime = T0,
    prefix: str = "tenant",
) -> World:
    world = World(topology, tenants=[f"{prefix}-{i}" for i in range(tenants)])
    states = [QuotaState() for _ in range(topology.partitions)]
    catalog = topology.catalog.stream(0)
    for model, prompt, completion in (
        ("echo", "0.0001", "0.0002"),
        ("smollm2", "0.0005", "0.0015"),
    ):
        world.add(catalog, _price(model, prompt, completion, start))
    queue: list[tuple[datetime, int, Event]] = []
    seq = 0

    def push(at: datetime, event: Event) -> None:
        nonlocal seq
        heapq.heappush(queue, (at, seq, event))
        seq += 1

    for i, tid in enumerate(world.tenants):
        key = hashlib.sha256(tid.encode()).hexdigest()
        push(
            start,
            TenantRegistered(
                tenant_id=tid,
                name=tid,
                api_key_hash=key,
                policy=policy_for(rng, i),
                occurred_at=start,
            ),
        )
    at = start
    for i in range(requests):
        at += timedelta(milliseconds=rng.randint(0, 2 * gap_ms))
        tid = rng.choice(world.tenants)
        push(
            at,
            InferenceRequested(
                tenant_id=tid,
                request_id=uuid.UUID(int=rng.getrandbits(128)),
                event_id=uuid.UUID(int=rng.getrandbits(128)),
                spec=RequestSpec(
                    model=rng.choice(MODELS),
                    prompt=f"question {i}",
                    max_tokens=rng.randint(16, 512),
                ),
                estimated_prompt_tokens=rng.randint(5, 300),
                occurred_at=at,
            ),
        )
        if i == requests // 2:
            world.add(catalog, _price("echo", "0.0002", "0.0003", at))
    while queue:
        at, _, event = heapq.heappop(queue)
        p = partition_for(event.tenant_id, topology.partitions)
        world.add(topology.requests.stream(p), event)
        state = states[p]
        outs = decide(state, event)
        evolve(state, event)
        for out in outs:
            evolve(state, out)
            world.add(topology.quota.stream(p), out)
            if isinstance(out, TokensReserved):
                _answer(rng, out, push)
        world.end = max(world.end, at)
    # a last tick per partition, past every deadline: what is still open expires
    for p, state in enumerate(states):
        tick = ClockTicked(
            tenant_id=SYSTEM_TENANT,
            partition=p,
            occurred_at=world.end + timedelta(seconds=31),
            event_id=uuid.UUID(int=rng.getrandbits(128)),
        )
        world.add(topology.requests.stream(p), tick)
        outs = decide(state, tick)
        evolve(state, tick)
        for out in outs:
            evolve(state, out)
            world.add(topology.quota.stream(p), out)
    return world


def _answer(rng: random.Random, reserved: TokensReserved, push: Push) -> None:
    """What the inference service does with a reservation (in place of Triton)."""
    roll = rng.random()
    if roll < 0.04:
        return  # never answered: it expires
    at = reserved.occurred_at + timedelta(milliseconds=rng.randint(20, 4000))
    eid = uuid.UUID(int=rng.getrandbits(128))
    if roll < 0.09:
        push(
            at,
            InferenceFailed(
                tenant_id=reserved.tenant_id,
                request_id=reserved.request_id,
                model=reserved.spec.model,
                reason="model crashed",
                occurred_at=at,
                event_id=eid,
            ),
        )
        return
    prompt = reserved.tokens - reserved.spec.max_tokens
    completion = rng.randint(0, reserved.spec.max_tokens + (40 if roll > 0.97 else 0))
    push(
        at,
        InferenceCompleted(
            tenant_id=reserved.tenant_id,
            request_id=reserved.request_id,
            model=reserved.spec.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_ms=float(rng.randint(20, 900)),
            occurred_at=at,
            event_id=eid,
        ),
    )


def _price(model: str, prompt: str, completion: str, at: datetime) -> PriceSet:
    return PriceSet(
        tenant_id=SYSTEM_TENANT,
        model=model,
        prompt_per_1k=Decimal(prompt),
        completion_per_1k=Decimal(completion),
        occurred_at=at,
    )
