"""Upcasters: pure functions that lift a stored event dict from version N to N+1.

A stored event is never rewritten. When a type's schema changes, bump its ``version``
in :mod:`events.model` and register ``upcast(type, from_version)`` here; the codec applies
the chain on read, so every consumer sees only the current shape.

No stored type has a second version yet, so the default registry is empty; the mechanism
is exercised by ``tests/events/test_upcasting.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RawEvent = dict[str, Any]
Upcast = Callable[[RawEvent], RawEvent]


class UpcasterChain:
    """Upcasters keyed by (type, version they read)."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcast] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcast], Upcast]:
        def add(fn: Upcast) -> Upcast:
            key = (event_type, from_version)
            if key in self._steps:
                raise ValueError(f"an upcaster for {event_type} v{from_version} exists already")
            self._steps[key] = fn
            return fn

        return add

    def upcast(self, raw: RawEvent, target_version: int) -> RawEvent:
        """Apply ``vN -> vN+1`` steps until ``raw`` reaches ``target_version``."""
        event_type = str(raw.get("type"))
        version = raw.get("version")
        if not isinstance(version, int):
            raise LookupError(f"{event_type}: version is not an integer")
        while version < target_version:
            step = self._steps.get((event_type, version))
            if step is None:
                raise LookupError(f"no upcaster for {event_type} v{version}")
            raw = step(dict(raw))
            if raw.get("version") != version + 1:
                raise LookupError(
                    f"upcaster for {event_type} v{version} did not produce v{version + 1}"
                )
            version += 1
        return raw


#: The registry the codec uses by default.
UPCASTERS = UpcasterChain()
