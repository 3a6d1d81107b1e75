"""What the billing functions accept as a database: a connection or a pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

Target = AsyncConnection[Any] | AsyncConnectionPool[Any]


@asynccontextmanager
async def connection(target: Target) -> AsyncIterator[AsyncConnection[Any]]:
    """``target`` itself, or a connection borrowed from it for the block."""
    if isinstance(target, AsyncConnectionPool):
        async with target.connection() as conn:
            yield conn
    else:
        yield target
