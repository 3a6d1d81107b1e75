"""The billing projection agents: the log folded into the PostgreSQL billing view.

``billing`` reads each tenant partition of ``requests`` and ``quota``; ``billing-catalog``
reads the global ``catalog`` (prices). Both hand each batch to
:func:`projections.billing.apply`, which writes the rows and the batch's stream positions in
one transaction, and resume from the positions stored there (``Ack.EXTERNAL``): a crash at
any point leaves the view exact, and a re-applied event changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg_pool import AsyncConnectionPool

from projections.billing import apply, migrate, positions
from streams.runtime import Ack, App, Stream
from streams.topics import Topic

#: Events per transaction: large batches amortise the round trips (see projections.billing).
BATCH = 5000
WITHIN_S = 0.2


class BillingStore:
    """A lazily opened pool and a migrated schema, shared by the billing agents."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opening = asyncio.Lock()  # both billing agents may ask at once: one pool

    async def pool(self) -> AsyncConnectionPool[Any]:
        async with self._opening:
            return await self._open()

    async def _open(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                self.dsn, min_size=1, max_size=4, open=False
            )
            await pool.open(wait=True, timeout=30)
            async with pool.connection() as conn:
                await migrate(conn, self.schema)
            self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def register_billing(app: App, store: BillingStore) -> None:
    topo = app.topology
    _register(app, store, "billing", (topo.requests, topo.quota))
    _register(app, store, "billing-catalog", (topo.catalog,))
    app.on_close(store.close)


def _register(app: App, store: BillingStore, name: str, topics: tuple[Topic, ...]) -> None:
    async def stored_positions(partition: int) -> dict[str, int]:
        streams = [t.stream(partition) for t in topics]
        return await positions(await store.pool(), store.schema, streams)

    @app.agent(*topics, ack=Ack.EXTERNAL, positions=stored_positions, batch=BATCH, name=name)
    async def billing_projection(stream: Stream) -> None:
        pool = await store.pool()
        async for batch in stream.take(BATCH, within=WITHIN_S):
            await apply(
                pool, [(d.stream, d.offset, d.event) for d in batch.deliveries], store.schema
            )
