"""Reading a whole billing schema back, to compare two builds of the view."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

TABLES = ("positions", "requests", "usage_ledger", "usage_daily", "usage_period", "prices")


async def snapshot(conn: AsyncConnection[Any], schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the view, in a canonical order."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with conn.cursor() as cur:
        for table in TABLES:
            await cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table)))
            found[table] = sorted(await cur.fetchall(), key=repr)
    return found
