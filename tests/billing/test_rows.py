"""The pure part of the projection: events → rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from events import InferenceCompleted, ReservationSettled
from projections.billing.rows import GROUPS, REQUEST_COLUMNS, fold, period_of, utc_day

from .builder import LogBuilder


def _column(name: str) -> int:
    return [c for c, _ in REQUEST_COLUMNS].index(name)


def test_a_settled_request_folds_into_one_row_and_one_ledger_entry() -> None:
    log = LogBuilder()
    rid = log.request("acme", "smollm2", "settled", prompt_tokens=10, completion_tokens=5)
    rows = fold(log.events())
    assert list(rows.requests) == [rid]
    values = rows.requests[rid]
    for group in ("requested", "reserved", "completed", "settled"):
        assert values[_column(GROUPS[group][0][0])] is not None
    for group in ("rejected", "failed", "released", "expired"):
        assert values[_column(GROUPS[group][0][0])] is None
    (entry,) = rows.ledger.values()
    assert entry[2:7] == ("acme", "smollm2", 10 + 4 + 256, 10, 5)


def test_the_first_event_of_a_type_wins_and_a_repeated_settlement_counts_once() -> None:
    log = LogBuilder()
    rid = log.request("acme", "smollm2", "settled", prompt_tokens=10, completion_tokens=5)
    events = log.events()
    settled = next(e for e in events if isinstance(e, ReservationSettled))
    completed = next(e for e in events if isinstance(e, InferenceCompleted))
    later = completed.model_copy(update={"prompt_tokens": 999})
    rows = fold([*events, settled, later])
    assert len(rows.ledger) == 1
    assert rows.requests[rid][_column("prompt_tokens")] == 10


def test_a_later_price_for_the_same_instant_corrects_the_earlier() -> None:
    log = LogBuilder()
    at = datetime(2025, 2, 1, tzinfo=UTC)
    log.price("smollm2", "1", "2", at=at)
    log.price("smollm2", "3", "4", at=at)
    rows = fold(log.events())
    assert [p[2:4] for p in rows.prices.values()] == [(3, 4)]


def test_days_and_periods_are_utc() -> None:
    late_evening = datetime(2025, 1, 31, 21, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert utc_day(late_evening) == date(2025, 2, 1)
    assert period_of(date(2025, 2, 17)) == date(2025, 2, 1)
