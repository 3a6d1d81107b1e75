"""The ``request-results`` projection agent: completed texts into Redis (with a TTL).

Reads each partition of ``requests`` and hands each batch to
:meth:`projections.request_results.RequestResults.apply` (the texts and the stream position in
one Lua script); every event is delivered so the stored position follows the tail. Resumes
from the positions stored in Redis (``Ack.EXTERNAL``).
"""

from __future__ import annotations

from redis.asyncio import Redis

from events.base import Event
from projections.request_results import DEFAULT_TTL_S, RequestResults
from streams.runtime import Ack, App, Stream

BATCH = 2000
WITHIN_S = 0.05


class ResultsStore:
    def __init__(self, url: str, prefix: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._redis: Redis | None = None
        self._results: RequestResults | None = None

    def results(self) -> RequestResults:
        if self._results is None:
            self._redis = Redis.from_url(self.url)
            self._results = RequestResults(self._redis, self.prefix, self.ttl_s)
        return self._results

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = self._results = None


def register_request_results(app: App, store: ResultsStore, name: str = "request-results") -> None:
    requests = app.topology.requests

    async def positions(partition: int) -> dict[str, int]:
        return await store.results().positions([requests.stream(partition)])

    @app.agent(app.topic(requests), ack=Ack.EXTERNAL, positions=positions, batch=BATCH, name=name)
    async def request_results(stream: Stream) -> None:
        results = store.results()
        async for batch in stream.take(BATCH, within=WITHIN_S):
            per_stream: dict[str, list[tuple[int, Event]]] = {}
            for d in batch.deliveries:
                per_stream.setdefault(d.stream, []).append((d.offset, d.event))
            for stream_name, items in per_stream.items():
                await results.apply(stream_name, items)

    app.on_close(store.close)
