"""What an audit finds: discrepancies, each naming the events involved."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Check = Literal[
    "decision",  # a recorded quota decision is not the one decide() gives
    "duplicate",  # the same fact (event id) appears twice in the log
    "reservation",  # a reservation closed twice, or closed / decided without its request
    "conservation",  # tokens are not conserved (charged more than reserved, amounts disagree)
    "billed_twice",  # a request billed more than once (in the log or in the view)
    "orphan_result",  # an inference result without a reservation
    "billing_view",  # the PostgreSQL billing view differs from the events
    "quota_view",  # the Redis quota view differs from the events
]
CHECKS: tuple[Check, ...] = (
    "decision",
    "duplicate",
    "reservation",
    "conservation",
    "billed_twice",
    "orphan_result",
    "billing_view",
    "quota_view",
)
MAX_REFS = 10


@dataclass(frozen=True, slots=True)
class EventRef:
    """Where an event is in the log."""

    stream: str
    offset: int
    type: str
    event_id: uuid.UUID

    def __str__(self) -> str:
        return f"{self.stream}:{self.offset} {self.type} {self.event_id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "offset": self.offset,
            "type": self.type,
            "event_id": str(self.event_id),
        }


@dataclass(frozen=True, slots=True)
class Discrepancy:
    check: Check
    tenant: str | None
    field: str
    expected: Any
    found: Any
    events: tuple[EventRef, ...] = ()
    more_events: int = 0  # events involved beyond those listed
    detail: str = ""
    at: datetime | None = None  # when it happened (event time), for --period

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "tenant": self.tenant,
            "field": self.field,
            "expected": jsonable(self.expected),
            "found": jsonable(self.found),
            "events": [r.to_json() for r in self.events],
            "more_events": self.more_events,
            "detail": self.detail,
            "at": None if self.at is None else self.at.isoformat(),
        }


def refs(items: list[EventRef]) -> tuple[tuple[EventRef, ...], int]:
    """The first :data:`MAX_REFS` refs and how many more there are."""
    return tuple(items[:MAX_REFS]), max(0, len(items) - MAX_REFS)


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


@dataclass
class CheckTally:
    """How many things a check looked at, and how many disagreed."""

    checked: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.failed == 0, "checked": self.checked, "failed": self.failed}


@dataclass
class Findings:
    """Discrepancies and tallies; ``keep`` drops what ``--tenant`` / ``--period`` exclude."""

    keep: Callable[[Discrepancy], bool] = field(default=lambda d: True)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    tallies: dict[str, CheckTally] = field(
        default_factory=lambda: {c: CheckTally() for c in CHECKS}
    )
    warnings: list[str] = field(default_factory=list)

    def checked(self, check: Check, n: int = 1) -> None:
        self.tallies[check].checked += n

    def add(self, d: Discrepancy) -> None:
        if self.keep(d):
            self.discrepancies.append(d)
            self.tallies[d.check].failed += 1
