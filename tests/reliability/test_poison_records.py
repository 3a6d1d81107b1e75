"""Poison in every stream: the agents dead-letter each record once and go on, and the views
stay exactly what the events say.

A deployment of its own (real RabbitMQ, Redis, PostgreSQL, the real agents and the API in
process) gets, per hypothesis example, a simulated world of fresh tenants (requests,
policies, prices, the inference service's answers) with garbage from
:mod:`tests.reliability.garbage` interleaved into the ``requests`` partitions and ``catalog``
and appended between the quota agent's decisions on the ``quota`` partitions. Once the agents
have caught up:

* every poison record is in its stream byte for byte, and in the dead-letter stream once per
  agent that reads the stream, as a ``decode`` letter carrying the record;
* no valid event is dead-lettered, and the quota agent's decisions equal the pure fold of the
  valid inputs (``simulate`` decides with the same ``decide``/``evolve``);
* the audit (the log folded in plain Python against both views) finds nothing;
* the API still gets its decisions (its decision waiter reads every ``quota`` partition).

The log only grows across examples, so every check covers everything published so far.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection
from redis.asyncio import Redis

from events import DecodeError, Event, decode, encode
from projections.audit import AuditOptions, audit
from projections.billing import positions
from projections.quota_view import QuotaView
from streams.agents.quota_view import INPUTS as QUOTA_VIEW_INPUTS
from streams.runtime.deadletter import MAX_DATA
from tests.audit.workload import World, simulate
from tests.ingress.harness import AGENTS, Deployment
from tests.reliability.garbage import CORPUS, HUGE, Poison, poison
from tests.reliability.logcheck import (
    DeadLetters,
    Letter,
    StreamView,
    dead_letters,
    expected_letters,
    read_views,
    readers,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

EXAMPLES = 20
SETTLE_S = 60.0
QUOTA_VIEW_TYPES = frozenset(str(c.model_fields["type"].default) for c in QUOTA_VIEW_INPUTS)
STREAMS = 5  # the harness's two partitions: requests-0, requests-1, quota-0, quota-1, catalog-0
# garbage aimed at stream number i of poisonable(), and where among the inputs
Plan = list[tuple[int, Poison, float]]
plans = st.lists(
    st.tuples(st.integers(min_value=0, max_value=STREAMS - 1), poison, st.floats(0, 1)),
    min_size=1,
    max_size=8,
)


@dataclass
class Ledger:
    """What was published so far."""

    garbage: dict[str, Counter[bytes]] = field(default_factory=dict)
    worlds: list[World] = field(default_factory=list)
    # event time of the next world: after the wall clock, so the API's requests (stamped now)
    # never move a partition's event time past a world's
    start: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    )


@dataclass
class Stores:
    conn: AsyncConnection[Any]
    redis: Redis


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ledger() -> Ledger:
    return Ledger()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stores(env: Deployment) -> AsyncIterator[Stores]:
    conn = await AsyncConnection.connect(env.settings.postgres_dsn, autocommit=True)
    redis = Redis.from_url(env.settings.redis_url)
    try:
        yield Stores(conn, redis)
    finally:
        await conn.close()
        await redis.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def steady(env: Deployment) -> dict[str, str]:
    """A tenant that submits through the API after each round of poison."""
    return await env.create_tenant("steady", token_budget=10**12)


def poisonable(env: Deployment) -> list[str]:
    topo = env.topology
    streams = [*topo.requests.streams, *topo.quota.streams, *topo.catalog.streams]
    assert len(streams) == STREAMS
    return streams


async def publish(env: Deployment, ledger: Ledger, plan: Plan) -> None:
    """A fresh world with the plan's garbage in it: inside the input streams (never after
    their last event), and on ``quota`` between the two halves of the inputs."""
    n = len(ledger.worlds)
    world = simulate(
        env.topology, random.Random(n), tenants=3, requests=40, start=ledger.start, prefix=f"ex{n}"
    )
    ledger.worlds.append(world)
    ledger.start = world.end + timedelta(hours=1)
    streams = poisonable(env)
    inputs = {s: [encode(e) for e in events] for s, events in world.inputs().items()}
    between: dict[str, list[bytes]] = {}
    for target, item, where in plan:
        stream, payload = streams[target], item.data
        ledger.garbage.setdefault(stream, Counter())[payload] += 1
        if stream in inputs:
            inputs[stream].insert(int(where * (len(inputs[stream]) - 1)), payload)
        else:
            between.setdefault(stream, []).append(payload)
    for stream, payloads in inputs.items():
        await env.log.append(stream, payloads[: len(payloads) // 2])
    for stream, payloads in between.items():
        await env.log.append(stream, payloads)
    for stream, payloads in inputs.items():
        await env.log.append(stream, payloads[len(payloads) // 2 :])


def decisions_of(view: StreamView, tenants: set[str]) -> list[Event]:
    return [view.events[o] for o in sorted(view.events) if view.events[o].tenant_id in tenants]


async def caught_up(env: Deployment, stores: Stores, views: dict[str, StreamView]) -> bool:
    """Both views have applied every event they take (poison may end a stream)."""
    streams = list(views)
    billed = await positions(stores.conn, env.settings.billing_schema, streams)
    if any(billed[s] < views[s].last_event() for s in streams):
        return False
    viewed = await QuotaView(stores.redis, env.settings.redis_prefix).positions(streams)
    return all(viewed[s] >= views[s].last_event(QUOTA_VIEW_TYPES) for s in streams)


async def settle(
    env: Deployment, stores: Stores, ledger: Ledger
) -> tuple[dict[str, StreamView], DeadLetters, dict[Letter, bytes]]:
    """Wait until every poison record is dead-lettered by each of its readers, every world
    is decided and both views caught up; the streams and the letters as they are then."""
    read_by = readers(env.agents, AGENTS)
    deadline = time.monotonic() + SETTLE_S
    while True:
        views = await read_views(env.log, poisonable(env))
        letters = await dead_letters(env.log, env.topology)
        expected = expected_letters(views, read_by)
        decided = all(
            len(decisions_of(views[s], set(w.tenants))) >= len(evs)
            for w in ledger.worlds
            for s, evs in w.decisions().items()
        )
        if (
            len(letters.letters) >= len(expected)
            and decided
            and await caught_up(env, stores, views)
        ):
            return views, letters, expected
        if time.monotonic() > deadline:
            missing = sorted(set(expected) - set(letters.keys))
            pytest.fail(f"not settled in {SETTLE_S}s: decided={decided}, missing {missing[:10]}")
        await asyncio.sleep(0.3)


async def check(env: Deployment, stores: Stores, ledger: Ledger, key: dict[str, str]) -> None:
    views, letters, expected = await settle(env, stores, ledger)

    # every poison record is in its stream as published, and nothing else is undecodable
    for stream, view in views.items():
        assert view.poison_bytes() == ledger.garbage.get(stream, Counter()), stream

    # each dead-lettered exactly once per reader, with its bytes; nothing valid dead-lettered
    assert Counter(letters.keys) == Counter(expected.keys())
    for letter in letters.letters:
        data = expected[(letter.agent, letter.stream, letter.offset)]
        assert letter.kind == "decode", letter
        assert letter.data == data[:MAX_DATA]
        assert (f"a record of {len(data)} bytes" in letter.error) == (len(data) > MAX_DATA)

    # the quota agent decided every world exactly as the pure fold of its valid inputs
    for world in ledger.worlds:
        for stream, events in world.decisions().items():
            assert decisions_of(views[stream], set(world.tenants)) == events

    # the views equal the log
    result = await audit(
        env.log,
        env.topology,
        AuditOptions(),
        billing=(stores.conn, env.settings.billing_schema),
        quota=QuotaView(stores.redis, env.settings.redis_prefix),
    )
    assert result.ok, [str(d) for d in result.findings.discrepancies[:5]]
    assert result.pending_decisions == 0
    decisions = sum(len(e) for w in ledger.worlds for e in w.decisions().values())
    assert result.findings.tallies["decision"].checked >= decisions
    assert result.findings.tallies["billing_view"].checked > 0
    assert result.findings.tallies["quota_view"].checked >= 3 * len(ledger.worlds)
    poison = {(s, o) for s, v in views.items() for o in v.poison}
    assert {(s, o) for s, o, _ in result.stats.undecodable} <= poison

    # the API's decision waiter read past the poison on every quota partition
    body = {"model": "echo", "prompt": "still there?", "max_tokens": 4}
    r = await env.client.post("/v1/requests", json=body, headers=key)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "reserved", r.json()


async def test_the_garbage_is_garbage() -> None:
    """The codec refuses every payload with a DecodeError (anything else would crash an agent
    instead of being dead-lettered)."""
    for payload in [*CORPUS, HUGE]:
        with pytest.raises(DecodeError):
            decode(payload)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a live deployment: shrinking would not replay
    suppress_health_check=list(HealthCheck),
)
@given(plan=plans)
async def test_poison_is_dead_lettered_and_the_views_stay_exact(
    env: Deployment, ledger: Ledger, stores: Stores, steady: dict[str, str], plan: Plan
) -> None:
    for _, item, _ in plan:
        with pytest.raises(DecodeError):
            decode(item.data)
    if not ledger.worlds:  # the hand-picked corpus, once, on every stream
        streams = poisonable(env)
        plan = plan + [(i, Poison(p), 0.5) for i in range(len(streams)) for p in CORPUS]
        plan.append((0, Poison(HUGE), 0.5))
    await publish(env, ledger, plan)
    await check(env, stores, ledger, steady)


async def test_after_a_restart_poison_is_skipped_not_dead_lettered_again(
    env: Deployment, ledger: Ledger, stores: Stores, steady: dict[str, str]
) -> None:
    """Agents read the dead-letter stream at start to skip what they dead-lettered; garbage
    in that stream too must not stop them."""
    dlq = env.topology.deadletter.stream(0)
    junk = [b"", b"not json", orjson.dumps({"agent": "quota"}), CORPUS[0]]
    await env.log.append(dlq, junk)
    before = await dead_letters(env.log, env.topology)
    await env.stop_agents()
    env.start_agents()
    await publish(env, ledger, [(0, Poison(b"after the restart"), 0.5), (2, Poison(b"\x00"), 0.0)])
    await check(env, stores, ledger, steady)
    after = await dead_letters(env.log, env.topology)
    assert after.unreadable == before.unreadable == len(junk)
    read_by = readers(env.agents, AGENTS)
    fresh = sum(len(read_by[t.stream(0)]) for t in (env.topology.requests, env.topology.quota))
    assert len(after.letters) == len(before.letters) + fresh
