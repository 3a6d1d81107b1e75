"""Event time for quota decisions: integer microseconds, the rate window, budget periods.

Everything here is shared by the pure domain (:mod:`streams.quota.state`) and the Redis view
(:mod:`projections.quota_view`), so both compute windows and periods by one definition.

* Time is UTC microseconds since the Unix epoch (``int``): exact, cheap to compare.
* The rate window is sliding over event time: at time ``now`` it holds what was admitted at
  ``t`` with ``now - 60 s < t <= now``. An admission leaves the window exactly 60 s later.
* A budget period is a UTC calendar month (default) or a UTC day, identified by the
  microsecond at which it starts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

Period = Literal["month", "day"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
#: Length of the tokens-per-minute and requests-per-minute windows.
WINDOW_S = 60
WINDOW_US = WINDOW_S * SECOND_US


_last: tuple[datetime, int] = (_EPOCH, 0)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact integer arithmetic).

    Remembers the last conversion: a decision carries its cause's ``occurred_at`` object,
    so the agent's decide/evolve/evolve of one event convert once.
    """
    global _last
    last = _last
    if moment is last[0]:
        return last[1]
    us = (moment - _EPOCH) // _ONE_US
    _last = (moment, us)
    return us


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def seconds(us: int) -> float:
    return us / SECOND_US


def in_window(t_us: int, now_us: int) -> bool:
    """Whether something admitted at ``t_us`` still counts in the window at ``now_us``."""
    return now_us - WINDOW_US < t_us <= now_us


def day_start(t_us: int) -> int:
    return (t_us // DAY_US) * DAY_US


@lru_cache(maxsize=4096)
def _month_of_day(day: int) -> tuple[int, int]:
    start = _EPOCH + timedelta(days=day)
    first = start.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return to_us(first), to_us(following)


def month_bounds(t_us: int) -> tuple[int, int]:
    """``[start, end)`` in microseconds of the UTC calendar month holding ``t_us``."""
    return _month_of_day(t_us // DAY_US)


def month_start(t_us: int) -> int:
    return _month_of_day(t_us // DAY_US)[0]


def period_bounds(period: Period, t_us: int) -> tuple[int, int]:
    """``[start, end)`` of the budget period of kind ``period`` holding ``t_us``."""
    if period == "day":
        start = day_start(t_us)
        return start, start + DAY_US
    return month_bounds(t_us)
