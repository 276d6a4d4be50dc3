"""A fresh SQLite database and a fresh PostgreSQL one have the same tables, and every
column the same name, type and nullability: SQL written once runs on either schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.database import Database
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase

# A column: (type, "NOT NULL" or "NULL"), by (table, column).
Columns = dict[tuple[str, str], tuple[str, str]]

# SQLite: the declared type (migrations spell it as PostgreSQL names it). A primary key
# column counts as NOT NULL, as the schema means it (SQLite only enforces it for INTEGER
# PRIMARY KEY and WITHOUT ROWID tables; PostgreSQL always does). Only ordinary tables:
# an FTS5 virtual table and its shadow tables are SQLite's form of what PostgreSQL keeps
# as an index (event_search_fts, migration 032: a GIN index there), not tables SQL
# written once reads.
_SQLITE_COLUMNS = """
    SELECT m.name, c.name, lower(c.type), c."notnull" OR c.pk > 0
    FROM pragma_table_list AS m, pragma_table_info(m.name) AS c
    WHERE m.schema = 'main' AND m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
"""
_POSTGRES_COLUMNS = """
    SELECT table_name, column_name, data_type, is_nullable = 'NO'
    FROM information_schema.columns WHERE table_schema = 'public'
"""


async def _columns(db: Database, sql: str) -> Columns:
    return {
        (row[0], row[1]): (row[2], "NOT NULL" if row[3] else "NULL") for row in await db.fetch(sql)
    }


def _differences(sqlite: Columns, postgres: Columns) -> list[str]:
    """One line per table or column that is not the same on both backends."""
    lines = []
    tables = {"sqlite": {t for t, _ in sqlite}, "postgres": {t for t, _ in postgres}}
    for table in sorted(tables["sqlite"] ^ tables["postgres"]):
        where = "sqlite" if table in tables["sqlite"] else "postgres"
        lines.append(f"table {table}: only on {where}")
    for table, column in sorted(sqlite.keys() | postgres.keys()):
        if table not in tables["sqlite"] & tables["postgres"]:
            continue
        on_sqlite = " ".join(sqlite.get((table, column), ("missing",)))
        on_postgres = " ".join(postgres.get((table, column), ("missing",)))
        if on_sqlite != on_postgres:
            lines.append(f"{table}.{column}: sqlite {on_sqlite}, postgres {on_postgres}")
    return lines


@pytest.mark.postgres
async def test_both_backends_have_the_same_columns(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    sqlite = await SqliteDatabase.open(str(tmp_path / "schema.db"))
    postgres = await PostgresDatabase.open(postgres_cluster.create_database("schema"))
    try:
        await run_migrations(sqlite)
        await run_migrations(postgres)
        sqlite_columns = await _columns(sqlite, _SQLITE_COLUMNS)
        postgres_columns = await _columns(postgres, _POSTGRES_COLUMNS)
    finally:
        await sqlite.close()
        await postgres.close()

    assert ("schema_migrations", "version") in sqlite_columns
    differences = _differences(sqlite_columns, postgres_columns)
    assert not differences, "the schemas differ:\n" + "\n".join(differences)


def test_differences_name_each_table_and_column() -> None:
    sqlite = {
        ("rooms", "room_id"): ("text", "NOT NULL"),
        ("rooms", "creator"): ("text", "NULL"),
        ("rooms", "ts"): ("integer", "NOT NULL"),
        ("only_here", "x"): ("text", "NULL"),
    }
    postgres = {
        ("rooms", "room_id"): ("text", "NOT NULL"),
        ("rooms", "creator"): ("text", "NOT NULL"),
        ("rooms", "ts"): ("bigint", "NOT NULL"),
        ("rooms", "extra"): ("boolean", "NULL"),
        ("only_there", "y"): ("text", "NULL"),
    }
    assert _differences(sqlite, postgres) == [
        "table only_here: only on sqlite",
        "table only_there: only on postgres",
        "rooms.creator: sqlite text NULL, postgres text NOT NULL",
        "rooms.extra: sqlite missing, postgres boolean NULL",
        "rooms.ts: sqlite integer NOT NULL, postgres bigint NOT NULL",
    ]
