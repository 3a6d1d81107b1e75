"""The tenant directory's projection agent (``tenant-directory``).

Reads each partition of ``requests`` and hands each batch to
:meth:`projections.tenant_directory.TenantDirectory.apply`, one Lua script that writes the
directory and the stream's position atomically. Every event of the partition is delivered (not
only the tenant events) so that the stored position follows the stream's tail and a restart
does not re-read the partition's requests. It resumes from the positions stored in Redis
(``Ack.EXTERNAL``). A partition read from the start (a new directory, or one rebuilt after its
store was lost) is flagged caught up once a batch comes back short of full; until every
partition is, the API answers an unknown key with 503 rather than 401.
"""

from __future__ import annotations

from redis.asyncio import Redis

from events.base import Event
from projections.tenant_directory import TenantDirectory
from streams.runtime import Ack, App, Stream

BATCH = 2000
WITHIN_S = 0.02


class DirectoryStore:
    """A lazily connected Redis client and the directory over it."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._redis: Redis | None = None
        self._directory: TenantDirectory | None = None

    def directory(self) -> TenantDirectory:
        if self._directory is None:
            self._redis = Redis.from_url(self.url)
            self._directory = TenantDirectory(self._redis, prefix=self.prefix)
        return self._directory

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = self._directory = None


def register_tenant_directory(
    app: App, store: DirectoryStore, name: str = "tenant-directory"
) -> None:
    requests = app.topology.requests

    catching_up: set[str] = set()  # streams read from the start, not yet caught up

    async def positions(partition: int) -> dict[str, int]:
        stream = requests.stream(partition)
        directory = store.directory()
        stored = await directory.positions([stream])
        if stored[stream] < 0 and await app.log.tail(stream) > 0:
            catching_up.add(stream)  # empty (new, or lost): rebuilding from the start
            await directory.rebuilding(stream)
        else:
            catching_up.discard(stream)
            await directory.caught_up(stream, empty=stored[stream] < 0)
        return stored

    @app.agent(app.topic(requests), ack=Ack.EXTERNAL, positions=positions, batch=BATCH, name=name)
    async def tenant_directory(stream: Stream) -> None:
        directory = store.directory()
        async for batch in stream.take(BATCH, within=WITHIN_S):
            per_stream: dict[str, list[tuple[int, Event]]] = {}
            for d in batch.deliveries:
                per_stream.setdefault(d.stream, []).append((d.offset, d.event))
            for stream_name, items in per_stream.items():
                # a batch short of full: the stream had no more to give, the rebuild is done
                done = stream_name in catching_up and len(batch.deliveries) < BATCH
                await directory.apply(stream_name, items, caught_up=done)
                if done:
                    catching_up.discard(stream_name)

    app.on_close(store.close)
