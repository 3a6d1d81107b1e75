"""Who processes which partition: M replicas of an agent share its N partitions.

RabbitMQ 3.10 has no single active consumer, so ownership is taken with PostgreSQL
session-level advisory locks, one per (agent, partition). A replica also holds a *member
slot* lock, so every replica can count the live replicas in ``pg_locks`` and take its fair
share, ``ceil(N / replicas)``. A replica that dies loses its session, PostgreSQL drops its
locks at once, and the others take its partitions on their next rebalance (every second).
A replica that loses its own connection stops all its workers before anything else: it no
longer owns anything.
"""

from __future__ import annotations

import math
import zlib
from typing import Protocol

import psycopg


class Ownership(Protocol):
    async def rebalance(self, agent: str, partitions: int) -> set[int]:
        """Acquire what this replica should own; return the partitions it should run now."""

    async def release(self, agent: str, partition: int) -> None: ...

    async def close(self) -> None: ...


class StaticOwnership:
    """One replica owns everything (or a fixed subset): tests and single-process runs."""

    def __init__(self, only: set[int] | None = None) -> None:
        self._only = only

    async def rebalance(self, agent: str, partitions: int) -> set[int]:
        every = set(range(partitions))
        return every if self._only is None else every & self._only

    async def release(self, agent: str, partition: int) -> None:
        return None

    async def close(self) -> None:
        return None


def lock_key(name: str) -> int:
    """A stable positive 31-bit advisory-lock key for a name."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class PgOwnership:
    def __init__(self, dsn: str, namespace: str = "quotaflow") -> None:
        self._dsn = dsn
        self._namespace = namespace
        self._conn: psycopg.AsyncConnection[tuple[int]] | None = None
        self._held: dict[str, set[int]] = {}
        self._slot: dict[str, int] = {}

    async def _connection(self) -> psycopg.AsyncConnection[tuple[int]]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._held.clear()
        self._slot.clear()
        self._conn = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=5
        )
        return self._conn

    async def _try_lock(self, key: int, sub: int) -> bool:
        conn = await self._connection()
        cur = await conn.execute("select pg_try_advisory_lock(%s, %s)", (key, sub))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def rebalance(self, agent: str, partitions: int) -> set[int]:
        try:
            return await self._rebalance(agent, partitions)
        except psycopg.Error:
            await self._drop()
            raise

    async def _rebalance(self, agent: str, partitions: int) -> set[int]:
        conn = await self._connection()
        key = lock_key(f"{self._namespace}:{agent}")
        members_key = lock_key(f"{self._namespace}:{agent}:members")
        if agent not in self._slot:
            for slot in range(4096):
                if await self._try_lock(members_key, slot):
                    self._slot[agent] = slot
                    break
            else:
                raise RuntimeError(f"no free member slot for agent {agent}")
        cur = await conn.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and granted"
            " and classid = %s::bigint::oid and objsubid = 2",
            (members_key,),
        )
        row = await cur.fetchone()
        members = max(int(row[0]) if row else 1, 1)
        share = math.ceil(partitions / members)
        held = self._held.setdefault(agent, set())
        held.intersection_update(range(partitions))
        if len(held) < share:
            for partition in range(partitions):
                if partition not in held and await self._try_lock(key, partition):
                    held.add(partition)
                    if len(held) >= share:
                        break
        return set(sorted(held)[:share])

    async def release(self, agent: str, partition: int) -> None:
        held = self._held.get(agent, set())
        if partition not in held:
            return
        conn = await self._connection()
        key = lock_key(f"{self._namespace}:{agent}")
        await conn.execute("select pg_advisory_unlock(%s, %s)", (key, partition))
        held.discard(partition)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._held.clear()
        self._slot.clear()
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        await self._drop()
