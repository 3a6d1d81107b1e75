"""The tenant directory's projection agent (``tenant-directory``).

Reads each partition of ``requests`` and hands each batch to
:meth:`projections.tenant_directory.TenantDirectory.apply`, one Lua script that writes the
directory and the stream's position atomically. Every event of the partition is delivered (not
only the tenant events) so that the stored position follows the stream's tail and a restart
does not re-read the partition's requests. It resumes from the positions stored in Redis
(``Ack.EXTERNAL``).
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

    async def positions(partition: int) -> dict[str, int]:
        return await store.directory().positions([requests.stream(partition)])

    @app.agent(app.topic(requests), ack=Ack.EXTERNAL, positions=positions, batch=BATCH, name=name)
    async def tenant_directory(stream: Stream) -> None:
        directory = store.directory()
        async for batch in stream.take(BATCH, within=WITHIN_S):
            per_stream: dict[str, list[tuple[int, Event]]] = {}
            for d in batch.deliveries:
                per_stream.setdefault(d.stream, []).append((d.offset, d.event))
            for stream_name, items in per_stream.items():
                await directory.apply(stream_name, items)

    app.on_close(store.close)
