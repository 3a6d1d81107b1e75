"""However the log is interleaved and cut into batches, the view comes out the same."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection

from projections.billing import apply, reset

from .builder import Item, LogBuilder, split
from .tables import snapshot

pytestmark = pytest.mark.services


def _log() -> LogBuilder:
    log = LogBuilder()
    rng = random.Random(7)
    log.price("llama-8b", "0.20", "0.60")
    log.traffic(rng, 40, gap_s=3600)
    log.price("llama-8b", "0.25", "0.75")  # mid-log price change
    log.price("smollm2", "0.01", "0.02")
    log.traffic(rng, 40, gap_s=3600)
    return log


LOG = _log()
ITEMS = LOG.items()


async def _build(conn: AsyncConnection[Any], schema: str, batches: list[list[Item]]) -> Any:
    await reset(conn, schema)
    for batch in batches:
        await apply(conn, batch, schema)
    return await snapshot(conn, schema)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(1, len(ITEMS) - 1), max_size=12),
    replays=st.lists(st.integers(0, 12), max_size=3),
)
async def test_batch_splits_interleavings_and_redelivery_give_identical_tables(
    conn: AsyncConnection[Any], schema: str, seed: int, cuts: list[int], replays: list[int]
) -> None:
    expected = await _build(conn, schema, [ITEMS])
    items = LOG.items(random.Random(seed))
    batches = split(items, cuts)
    for at in sorted({min(r, len(batches)) for r in replays}, reverse=True):
        # a consumer that restarted from an older offset: a batch of events applied already,
        # running on into events that the next batch will bring again
        done = sum(len(b) for b in batches[:at])
        batches.insert(at, items[max(0, done - 20) : done + 5])
    assert await _build(conn, schema, batches) == expected
