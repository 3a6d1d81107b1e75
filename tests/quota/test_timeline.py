"""Event time: microseconds, the rate window, budget periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from streams.quota.timeline import (
    DAY_US,
    WINDOW_US,
    from_us,
    in_window,
    month_bounds,
    period_bounds,
    to_us,
)


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return to_us(datetime(year, month, day, hour, minute, second, tzinfo=UTC))


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
    )
)
def test_microseconds_round_trip(moment: datetime) -> None:
    assert from_us(to_us(moment)) == moment


def test_the_window_is_the_last_60_s_open_at_its_start() -> None:
    now = us(2025, 6, 1, 12, 0, 0)
    assert in_window(now, now)
    assert in_window(now - WINDOW_US + 1, now)
    assert not in_window(now - WINDOW_US, now)
    assert not in_window(now + 1, now)


def test_months_and_days_are_utc_calendar_periods() -> None:
    assert month_bounds(us(2024, 2, 29, 23, 59, 59)) == (us(2024, 2, 1), us(2024, 3, 1))
    assert month_bounds(us(2024, 12, 31, 12)) == (us(2024, 12, 1), us(2025, 1, 1))
    assert month_bounds(us(2025, 1, 1)) == (us(2025, 1, 1), us(2025, 2, 1))
    assert period_bounds("day", us(2025, 1, 1, 5)) == (us(2025, 1, 1), us(2025, 1, 1) + DAY_US)
    assert period_bounds("month", us(2025, 4, 30, 23)) == (us(2025, 4, 1), us(2025, 5, 1))
