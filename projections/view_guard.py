"""Noticing that a Redis view lost its data (a FLUSHALL, a failover to an empty replica).

Each Redis view stores its positions beside its data, and its apply script skips what is at or
below the stored position. If the store is emptied under a running projection, the stored
positions are gone but the projection would go on from where it was, writing a view that
misses everything before. So each apply passes the *floor*: the highest position this process
knows the store held for that stream. The script refuses (returns -1, writing nothing) when
the stored position is below the floor, and :class:`ViewLost` (retryable) makes the agent
restart from the positions the store really holds: for an emptied store, the start of the
log, which rebuilds the view.

What it assumes: the store is lost whole (FLUSHALL, FLUSHDB, a failover to an empty replica),
as a real flush is; keys evicted one by one are not noticed, so run Redis with
``maxmemory-policy noeviction``. A rebuild from the start needs the log from its start (the
stream retention, ``QUOTAFLOW_RETENTION_MAX_BYTES``, must keep every tenant's registration).
``clear()`` on a view forgets its floors: only for views no running agent writes to.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.runtime.errors import Retryable


class ViewLost(Retryable):
    """The store's position fell below what this process applied: rebuild from the log."""


class Floors:
    """The highest stored position this process knows of, per stream."""

    def __init__(self) -> None:
        self._floor: dict[str, int] = {}

    def floor(self, stream: str) -> int:
        return self._floor.get(stream, -1)

    def loaded(self, positions: Mapping[str, int]) -> None:
        """What the store holds now (an agent resumes from these): the new floors."""
        self._floor.update(positions)

    def applied(self, stream: str, result: int, last: int) -> int:
        """Check a script's ``result``; on success, ``last`` is the stream's new floor."""
        if result < 0:
            # only this stream's worker restarts (and reloads its floors); the other streams
            # keep theirs, so each of them notices the loss on its own next batch
            raise ViewLost(f"{stream}: the store's position is below {last}; the view was lost")
        if last > self._floor.get(stream, -1):
            self._floor[stream] = last
        return result
