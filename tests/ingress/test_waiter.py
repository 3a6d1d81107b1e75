"""The decision waiter on the in-memory log: futures resolved by request id, a bounded cache."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from events import RequestRejected, ReservationSettled, TokensReserved, encode
from events.model import RequestSpec
from streams.ingress.waiter import Decision, DecisionWaiter, parse
from streams.log import Position
from streams.memory_log import MemoryEventLog

SPEC = RequestSpec(model="echo", prompt="x", max_tokens=4)


def reserved(rid: uuid.UUID, tokens: int = 10) -> TokensReserved:
    return TokensReserved(
        tenant_id="t", request_id=rid, tokens=tokens, expires_at=datetime.now(UTC), spec=SPEC
    )


def rejected(rid: uuid.UUID) -> RequestRejected:
    return RequestRejected(
        tenant_id="t", request_id=rid, reason="tpm", requested_tokens=5, retry_after_s=1.5
    )


def test_parse_reads_decisions_and_skips_the_rest() -> None:
    rid = uuid.uuid4()
    assert parse(encode(reserved(rid))) == Decision(str(rid), "t", "reserved", 10)
    assert parse(encode(rejected(rid))) == Decision(str(rid), "t", "rejected", 5, "tpm", "", 1.5)
    settled = ReservationSettled(
        tenant_id="t",
        request_id=rid,
        model="echo",
        reserved=1,
        prompt_tokens=1,
        completion_tokens=0,
    )
    assert parse(encode(settled)) is None
    assert parse(b"not json") is None
    assert parse(b'{"type": "TokensReserved", "version": 1}') is None


async def test_futures_are_resolved_by_request_id() -> None:
    log = MemoryEventLog()
    for s in ("quota-0", "quota-1"):
        await log.create_stream(s)
    waiter = DecisionWaiter(log, ["quota-0", "quota-1"], start=Position.first())
    waiter.start()
    try:
        a, b, never = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        fa, fb = waiter.expect(str(a)), waiter.expect(str(b))
        fn = waiter.expect(str(never))
        await log.append("quota-1", [encode(rejected(b))])
        await log.append("quota-0", [encode(reserved(a))])
        got_a = await DecisionWaiter.wait(fa, 2)
        got_b = await DecisionWaiter.wait(fb, 2)
        assert got_a is not None
        assert got_a.status == "reserved"
        assert got_b is not None
        assert got_b.reason == "tpm"
        assert await DecisionWaiter.wait(fn, 0.05) is None
        for rid in (a, b, never):
            waiter.forget(str(rid))
        assert waiter.pending == 0
        # a decision that came earlier is found by a later waiter
        assert waiter.recent(str(a)) == got_a
        late = waiter.expect(str(a))
        assert late.done()
        assert late.result() == got_a
        waiter.forget(str(a))
    finally:
        await waiter.close()


async def test_shared_waits_and_the_bounded_cache() -> None:
    log = MemoryEventLog()
    await log.create_stream("q")
    waiter = DecisionWaiter(log, ["q"], cache_size=2, start=Position.first())
    waiter.start()
    try:
        rid = str(uuid.uuid4())
        f1, f2 = waiter.expect(rid), waiter.expect(rid)
        assert f1 is f2
        waiter.forget(rid)
        assert waiter.pending == 1
        ids = [uuid.uuid4() for _ in range(3)]
        await log.append("q", [encode(reserved(i)) for i in ids])
        for _ in range(100):
            if waiter.seen == 3:
                break
            await asyncio.sleep(0.01)
        assert waiter.recent(str(ids[0])) is None  # evicted
        assert waiter.recent(str(ids[2])) is not None
        waiter.forget(rid)
        assert waiter.pending == 0
        assert waiter.running
    finally:
        await waiter.close()
    assert not waiter.running
