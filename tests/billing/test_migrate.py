"""Migrations: ordered, recorded, idempotent, never edited once applied."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection, sql

from projections.billing import apply, invoice, migrate, promote, reset, totals
from projections.billing.migrate import MIGRATIONS_DIR, MigrationError, discover

from .builder import LogBuilder
from .tables import snapshot

pytestmark = pytest.mark.services


async def test_migrate_is_idempotent_and_records_each_file(
    conn: AsyncConnection[Any], schema: str
) -> None:
    assert await migrate(conn, schema) == []
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL("SELECT version, name FROM {} ORDER BY version").format(
                sql.Identifier(schema, "schema_migrations")
            )
        )
        recorded = await cur.fetchall()
    assert recorded == [(m.version, m.name) for m in discover()]
    assert len(recorded) >= 4


async def test_an_applied_migration_that_changed_is_refused(
    conn: AsyncConnection[Any], schema: str, tmp_path: Path
) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    scratch = f"{schema}_copy"
    try:
        assert await migrate(conn, scratch, tmp_path) == [m.version for m in discover()]
        _edit_first(tmp_path)
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, scratch, tmp_path)
    finally:
        await conn.rollback()
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(scratch))
        )
        await conn.commit()


def _edit_first(directory: Path) -> None:
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")


def test_a_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"not NNNN_name\.sql"):
        discover(tmp_path)


async def test_reset_empties_the_view(conn: AsyncConnection[Any], schema: str) -> None:
    log = LogBuilder()
    log.request("acme", "smollm2")
    await apply(conn, log.items(), schema)
    assert await totals(conn, schema)
    await reset(conn, schema)
    assert all(rows == [] for rows in (await snapshot(conn, schema)).values())


async def test_promote_swaps_a_scratch_schema_in(conn: AsyncConnection[Any], schema: str) -> None:
    log = LogBuilder()
    log.price("smollm2", "1.00", "2.00")
    log.request("acme", "smollm2", prompt_tokens=1000, completion_tokens=1000)
    scratch = f"billing_scratch_{uuid.uuid4().hex[:12]}"
    await migrate(conn, scratch)
    await apply(conn, log.items(), scratch)
    await promote(conn, scratch, schema)
    bill = await invoice(conn, "acme", log.now.date(), schema=schema)
    assert bill.total == 3
    async with conn.cursor() as cur:
        await cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (scratch,))
        assert await cur.fetchone() is None
