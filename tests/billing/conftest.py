"""Fixtures: the real PostgreSQL, one fresh billing schema per test (dropped afterwards)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from projections.billing import migrate
from quotaflow.settings import get_settings


@pytest.fixture(scope="session")
def dsn() -> str:
    """The settings' DSN; its database is created if it does not exist."""
    target = get_settings().postgres_dsn
    dbname = str(conninfo_to_dict(target).get("dbname") or "quotaflow")
    with psycopg.connect(make_conninfo(target, dbname="postgres"), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists is None:
            # another test session may create it at the same moment
            with contextlib.suppress(errors.DuplicateDatabase):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return target


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(dsn) as connection:
        yield connection


@pytest.fixture
async def schema(conn: AsyncConnection[Any]) -> AsyncIterator[str]:
    """A fresh, migrated schema of its own."""
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    await migrate(conn, name)
    yield name
    await conn.rollback()
    async with conn.transaction():
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
