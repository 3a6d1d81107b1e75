"""``--from`` / ``--to`` bounds: parsing, and resolving them to offsets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from projections.audit.bounds import Bound, BoundError, parse_bound, resolve
from streams.log import Position
from streams.memory_log import MemoryEventLog


def test_parse() -> None:
    assert parse_bound("requests-0:1200") == Bound(stream="requests-0", offset=1200)
    assert parse_bound("2025-01-30T22:00:00Z") == Bound(time=datetime(2025, 1, 30, 22, tzinfo=UTC))
    assert parse_bound("2025-01-30") == Bound(time=datetime(2025, 1, 30, tzinfo=UTC))
    assert parse_bound("2025-01-30T23:00:00+01:00").time == datetime(2025, 1, 30, 22, tzinfo=UTC)
    for bad in ("requests-0", "requests-0:x", ":12", "yesterday"):
        with pytest.raises(BoundError):
            parse_bound(bad)


async def test_resolve_offsets_and_times() -> None:
    log = MemoryEventLog()
    for s in ("p-requests-0", "p-quota-0"):
        await log.create_stream(s)
    await log.append("p-requests-0", [b"a"] * 5)
    await log.append("p-quota-0", [b"a"] * 3)
    await asyncio.sleep(0.02)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.02)
    await log.append("p-requests-0", [b"b"] * 4)
    streams = ["p-requests-0", "p-quota-0"]
    tails = {"p-requests-0": 9, "p-quota-0": 3}

    starts, ends = await resolve(log, streams, tails, prefix="p-")
    assert ends == tails
    assert all(p == Position.first() for p in starts.values())

    # an offset (the prefix may be left out), inclusive at both ends
    starts, ends = await resolve(
        log, streams, tails, [parse_bound("requests-0:2")], [parse_bound("p-requests-0:6")], "p-"
    )
    assert starts["p-requests-0"] == Position.offset(2)
    assert ends["p-requests-0"] == 7
    assert ends["p-quota-0"] == 3

    # a time: from the first record stored at or after it / up to the last stored before it
    starts, ends = await resolve(log, streams, tails, [Bound(time=middle)], [], "p-")
    assert starts == {"p-requests-0": Position.offset(5), "p-quota-0": Position.offset(3)}
    starts, ends = await resolve(log, streams, tails, [], [Bound(time=middle)], "p-")
    assert ends == {"p-requests-0": 5, "p-quota-0": 3}

    with pytest.raises(BoundError):
        await resolve(log, streams, tails, [parse_bound("catalog-0:1")], [], "p-")
