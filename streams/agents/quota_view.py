"""The Redis quota view's projection agent.

Reads each tenant partition of ``requests`` (policies) and ``quota`` (decisions) and hands
each stream's part of a batch to :meth:`projections.quota_view.QuotaView.apply`, one Lua
script that writes the view and that stream's position atomically. It resumes from the
positions stored in Redis (``Ack.EXTERNAL``), so a re-applied event changes nothing.
"""

from __future__ import annotations

from redis.asyncio import Redis

from events import (
    ClockTicked,
    QuotaPolicySet,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
)
from events.base import Event
from projections.quota_view import QuotaView
from quotaflow.observability.tokens import observe_decisions
from streams.runtime import Ack, App, Stream

INPUTS = (
    ClockTicked,  # only moves the position: an idle partition still notices a lost store
    TenantRegistered,
    QuotaPolicySet,
    TokensReserved,
    RequestRejected,
    ReservationSettled,
    ReservationReleased,
    ReservationExpired,
)
BATCH = 2000


class QuotaViewStore:
    """A lazily connected Redis client and the view over it."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._redis: Redis | None = None
        self._view: QuotaView | None = None
        self._observed: dict[str, int] = {}

    def first_time(self, per_stream: dict[str, list[tuple[int, Event]]]) -> list[Event]:
        """The events this process has not seen before (offsets above each stream's mark)."""
        out: list[Event] = []
        for stream, items in per_stream.items():
            mark = self._observed.get(stream, -1)
            out += [event for offset, event in items if offset > mark]
            self._observed[stream] = max(mark, items[-1][0])
        return out

    def view(self) -> QuotaView:
        if self._view is None:
            self._redis = Redis.from_url(self.url)
            self._view = QuotaView(self._redis, prefix=self.prefix)
        return self._view

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = self._view = None


def register_quota_view(app: App, store: QuotaViewStore, name: str = "quota-view") -> None:
    topo = app.topology

    async def positions(partition: int) -> dict[str, int]:
        return await store.view().positions(
            [topo.requests.stream(partition), topo.quota.stream(partition)]
        )

    @app.agent(
        app.topic(topo.requests),
        app.topic(topo.quota),
        accepts=INPUTS,
        ack=Ack.EXTERNAL,
        positions=positions,
        batch=BATCH,
        name=name,
    )
    async def quota_view(stream: Stream) -> None:
        view = store.view()
        async for batch in stream.take(BATCH, within=0.05):
            per_stream: dict[str, list[tuple[int, Event]]] = {}
            for d in batch.deliveries:
                per_stream.setdefault(d.stream, []).append((d.offset, d.event))
            for name_, items in per_stream.items():
                await view.apply(name_, items)
            # tokens reserved/settled/released per tenant (what KEDA scales inference on);
            # counted here, not in the quota agent, which replays its history at every start;
            # and once: a rebuild after a lost view replays what this process counted already
            observe_decisions(store.first_time(per_stream))

    app.on_close(store.close)
