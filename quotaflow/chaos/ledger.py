"""What the log says happened to every request: the source of truth the chaos run checks.

A request is *lost* when the quota reserved tokens for it but nothing closed the reservation
(no ReservationSettled, ReservationReleased or ReservationExpired), or when a client was told
202 and the log holds no decision for it. Tokens are *double-counted* when a request was
reserved or closed more than once, or when a view holds more tokens than the log's settlements.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from events import (
    AnyEvent,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TokensReserved,
)

Terminal = ReservationSettled | ReservationReleased | ReservationExpired


@dataclass
class Ledger:
    requested: Counter[str] = field(default_factory=Counter)
    reserved: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    closed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    settled_tokens: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    tenant_of: dict[str, str] = field(default_factory=dict)

    def add(self, events: Iterable[AnyEvent]) -> None:
        for e in events:
            match e:
                case InferenceRequested():
                    rid = str(e.request_id)
                    self.requested[rid] += 1
                    self.tenant_of[rid] = e.tenant_id
                case TokensReserved():
                    self.reserved[str(e.request_id)] += 1
                case RequestRejected():
                    self.rejected[str(e.request_id)] += 1
                case InferenceCompleted():
                    self.completed[str(e.request_id)] += 1
                case InferenceFailed():
                    self.failed[str(e.request_id)] += 1
                case ReservationSettled():
                    rid = str(e.request_id)
                    self.closed[rid].append("settled")
                    self.settled_tokens[rid].append(e.prompt_tokens + e.completion_tokens)
                case ReservationReleased() | ReservationExpired():
                    self.closed[str(e.request_id)].append(e.type)
                case _:
                    pass

    def open(self) -> list[str]:
        """Reserved and never closed."""
        return [rid for rid in self.reserved if not self.closed.get(rid)]

    def undecided(self, acknowledged: Iterable[str]) -> list[str]:
        """Told 202 by the API, but neither reserved nor rejected in the log."""
        return [r for r in acknowledged if not self.reserved[r] and not self.rejected[r]]

    def double_counted_tokens(self) -> int:
        """Tokens charged beyond the first settlement of each request."""
        return sum(sum(tokens[1:]) for tokens in self.settled_tokens.values())

    def twice(self) -> dict[str, int]:
        """Requests decided, reserved or closed more than once."""
        return {
            "reserved_twice": sum(1 for n in self.reserved.values() if n > 1),
            "decided_twice": sum(
                1 for rid in self.reserved if self.reserved[rid] + self.rejected[rid] > 1
            ),
            "closed_twice": sum(1 for c in self.closed.values() if len(c) > 1),
        }

    def settled_by_tenant(self) -> Counter[str]:
        """Charged tokens per tenant, each request once."""
        out: Counter[str] = Counter()
        for rid, tokens in self.settled_tokens.items():
            out[self.tenant_of.get(rid, "?")] += tokens[0]
        return out

    def closed_counts(self) -> Counter[str]:
        return Counter(c[0] for c in self.closed.values() if c)
