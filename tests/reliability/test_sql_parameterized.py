"""No SQL is built from strings anywhere in the product: values go in parameters,
identifiers through ``psycopg.sql`` (see :mod:`tests.reliability.sqlscan`)."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.sqlscan import scan_source, scan_tree

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("projections", "streams", "quotaflow")

SAMPLE = """
from psycopg import sql

async def bad(cur, conn, tenant, table, rows):
    await cur.execute(f"SELECT * FROM usage WHERE tenant_id = '{tenant}'")
    await cur.execute("SELECT * FROM usage WHERE tenant_id = '%s'" % tenant)
    await conn.execute("DELETE FROM " + table)
    await cur.executemany("INSERT INTO {} VALUES (%s)".format(table), rows)
    query = "SELECT * FROM " + table
    await cur.execute(query)
    q = "SELECT 1"
    q += " FROM " + table
    await cur.execute(q)
    await cur.execute(query=f"SELECT {tenant}")
    async with cur.copy(f"COPY {table} FROM STDIN") as copy:
        pass
    await cur.execute(sql.SQL(f"SELECT * FROM {table}"))
    await cur.execute(" ".join(["SELECT", tenant]))

async def good(cur, conn, tenant, table, rows, pipe, migration):
    await cur.execute("SELECT * FROM usage WHERE tenant_id = %s", (tenant,))
    await cur.execute(sql.SQL("SELECT * FROM {} WHERE t = %s").format(sql.Identifier(table)), [1])
    await cur.execute("SELECT 1 " + "FROM dual")
    statement = sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(table))
    await conn.execute(statement)
    await cur.execute(sql.SQL("SELECT {}").format(sql.Identifier("a")) + sql.SQL(" FROM t"))
    await cur.execute(migration.text)
    await pipe.execute()
    clone = rows.copy()
    async with cur.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
        pass
"""


def test_the_scanner_finds_string_built_sql_and_nothing_else() -> None:
    scan = scan_source(SAMPLE, "sample.py")
    found = [(f.line, f.call) for f in scan.findings]
    assert found == [
        (5, "execute"),
        (6, "execute"),
        (7, "execute"),
        (8, "executemany"),
        (10, "execute"),
        (13, "execute"),
        (14, "execute"),
        (15, "copy"),
        (17, "SQL"),
        (18, "execute"),
    ], [str(f) for f in scan.findings]
    assert "via query" in str(scan.findings[4])
    assert str(scan.findings[0]).startswith("sample.py:5: execute(...): the query is an f-string")
    assert scan.calls == 23  # the redis pipeline's execute() and dict.copy() are not queries


def test_sql_is_parameterized_everywhere() -> None:
    scan = scan_tree(ROOT, FOLDERS)
    assert scan.calls >= 30, "the scan found (almost) no queries: is it looking in the right place?"
    assert [str(f) for f in scan.findings] == []
