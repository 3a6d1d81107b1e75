"""Schema migrations of the billing view: numbered SQL files applied in order.

``infra/sql/NNNN_name.sql`` are applied in the order of their number, each in its own
transaction together with the row that records it in ``<schema>.schema_migrations``; a
migration that is recorded already is skipped, so :func:`migrate` is idempotent. The files
name no schema: each runs with ``search_path`` set to the target schema, so the same files
build the live view (``billing``) or a scratch copy that a replay fills and
:func:`promote` swaps in.

Run it with ``python -m projections.billing [--schema billing] [--dsn ...] [--reset]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, sql

#: Where the migration files live: ``infra/sql`` in a checkout, ``sql/`` beside this module
#: in a built wheel (pyproject force-includes them there).
_PACKAGED = Path(__file__).resolve().parent / "sql"
MIGRATIONS_DIR = (
    _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "infra" / "sql"
)
DEFAULT_SCHEMA = "billing"

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migration files disagree with what the schema records."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> bytes:
        return self.path.read_bytes()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, in order; numbers must be unique."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: not NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    return found


async def migrate(
    conn: AsyncConnection[Any],
    schema: str = DEFAULT_SCHEMA,
    directory: Path = MIGRATIONS_DIR,
) -> list[int]:
    """Bring ``schema`` up to date; returns the versions applied now (empty if none).

    Concurrent callers are serialized by an advisory lock per schema. A recorded migration
    whose file has changed since is an error: applied migrations are never edited.
    """
    schema_id = sql.Identifier(schema)
    table = sql.Identifier(schema, "schema_migrations")
    applied_now: list[int] = []
    for migration in discover(directory):
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext('quotaflow.migrate:' || %s))", (schema,)
            )
            await cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema_id))
            await cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            await cur.execute(
                sql.SQL("SELECT checksum FROM {} WHERE version = %s").format(table),
                (migration.version,),
            )
            row = await cur.fetchone()
            if row is not None:
                if row[0] != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} changed after it was applied to {schema!r}"
                    )
                continue
            await cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema_id))
            await cur.execute(migration.text)
            await cur.execute(
                sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(
                    table
                ),
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.version)
    return applied_now


async def reset(
    conn: AsyncConnection[Any],
    schema: str = DEFAULT_SCHEMA,
    directory: Path = MIGRATIONS_DIR,
) -> None:
    """Drop ``schema`` with everything in it and build it again, empty (for a rebuild)."""
    async with conn.transaction():
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
    await migrate(conn, schema, directory)


async def promote(conn: AsyncConnection[Any], scratch: str, target: str = DEFAULT_SCHEMA) -> None:
    """Replace ``target`` by ``scratch`` in one transaction (after a replay into ``scratch``).

    Readers see either the old view or the new one, never a mix. The views inside the schema
    follow the rename (PostgreSQL binds them to tables, not names).
    """
    if scratch == target:
        raise ValueError("scratch and target are the same schema")
    async with conn.transaction():
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target))
        )
        await conn.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(scratch), sql.Identifier(target)
            )
        )


async def _main(dsn: str, schema: str, do_reset: bool) -> None:
    async with await AsyncConnection.connect(dsn) as conn:
        if do_reset:
            await reset(conn, schema)
            print(f"{schema}: rebuilt empty")
            return
        applied = await migrate(conn, schema)
        print(f"{schema}: applied {applied}" if applied else f"{schema}: up to date")


def main(argv: list[str] | None = None) -> None:
    from quotaflow.settings import get_settings

    parser = argparse.ArgumentParser(description="Apply the billing schema migrations.")
    parser.add_argument("--dsn", default=get_settings().postgres_dsn)
    parser.add_argument("--schema", default=DEFAULT_SCHEMA)
    parser.add_argument("--reset", action="store_true", help="drop the schema and rebuild it")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.dsn, args.schema, args.reset))
