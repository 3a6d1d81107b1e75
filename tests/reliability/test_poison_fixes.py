"""Unit-level guards for the two poison records the reliability suite found (see
test_poison_records.py for the real-server version)."""

from __future__ import annotations

import uuid

from events import TokensReserved, encode
from streams.ingress.waiter import parse
from streams.runtime.deadletter import MAX_DATA, DeadLetter
from tests.reliability.garbage import CORPUS, HUGE


def test_the_decision_waiter_ignores_near_decisions_with_odd_ids() -> None:
    """An unhashable request id used to reach the waiter's cache and stop the partition's
    consumer for good (it re-read the same record forever)."""
    odd_ids = [
        b'{"type":"TokensReserved","version":1,"request_id":{"a":1},"tenant_id":"t","tokens":1}',
        b'{"type":"TokensReserved","version":1,"request_id":["r"],"tenant_id":"t","tokens":1}',
        b'{"type":"TokensReserved","version":1,"request_id":"r","tenant_id":{"t":1},"tokens":1}',
        b'{"type":"RequestRejected","version":1,"request_id":[],"tenant_id":"t","reason":"x"}',
    ]
    for payload in [*odd_ids, *CORPUS]:
        found = parse(payload)
        assert found is None or isinstance(hash(found.request_id), int), payload[:80]
    assert all(parse(p) is None for p in odd_ids)
    one = parse(
        b'{"type":"TokensReserved","version":1,"request_id":"r","tenant_id":"t","tokens":3}'
    )
    assert one is not None
    assert (one.request_id, one.tenant_id, one.status, one.tokens) == ("r", "t", "reserved", 3)


def test_a_valid_decision_still_parses_fast() -> None:
    from datetime import UTC, datetime

    from events.model import RequestSpec

    event = TokensReserved(
        tenant_id="acme",
        request_id=uuid.uuid4(),
        tokens=12,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        spec=RequestSpec(model="echo", prompt="x", max_tokens=4),
    )
    found = parse(encode(event))
    assert found is not None
    assert (found.request_id, found.tokens) == (str(event.request_id), 12)


def test_a_dead_letter_of_a_huge_record_fits_in_a_record() -> None:
    """RabbitMQ refuses records over its 1 MiB frame: a letter carrying a 1 MB record whole
    (base64: 1.33 MB) could never be stored and its agent restarted on it forever."""
    letter = DeadLetter.of("quota", "requests-0", 7, "decode", "not JSON", HUGE)
    assert len(letter.encode()) < 1024 * 1024 - 1024
    assert letter.data == HUGE[:MAX_DATA]
    assert f"a record of {len(HUGE)} bytes" in letter.error
    assert DeadLetter.decode(letter.encode()) == letter
    small = DeadLetter.of("quota", "requests-0", 8, "decode", "e" * 5000, b"tiny")
    assert small.data == b"tiny"
    assert small.error == "e" * 2000
