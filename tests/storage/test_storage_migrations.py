"""Schema migrations apply on SQLite and PostgreSQL, idempotently, to the same tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.migrations import available_migrations, run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase

_TABLES_SQL = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    "postgres": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
}


async def _open(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> SqliteDatabase | PostgresDatabase:
    if backend == "sqlite":
        return await SqliteDatabase.open(str(tmp_path / "migrations.db"))
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return await PostgresDatabase.open(cluster.create_database("migrations"))


@pytest.fixture
async def fresh_database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, SqliteDatabase | PostgresDatabase]]:
    """An empty database of the backend under test, and the backend's name."""
    db = await _open(backend, request, tmp_path)
    try:
        yield backend, db
    finally:
        await db.close()


async def _tables(db: SqliteDatabase | PostgresDatabase) -> set[str]:
    return {row[0] for row in await db.fetch(_TABLES_SQL[db.dialect])}


async def test_migrations_apply_once_then_are_a_no_op(
    fresh_database: tuple[str, SqliteDatabase | PostgresDatabase],
) -> None:
    backend, db = fresh_database
    expected = [version for version, _, _ in available_migrations(backend)]
    assert expected, f"no migrations found for {backend}"

    assert await run_migrations(db) == expected
    tables = await _tables(db)
    assert "schema_migrations" in tables

    assert await run_migrations(db) == []
    assert await _tables(db) == tables
    recorded = [row[0] for row in await db.fetch("SELECT version FROM schema_migrations")]
    assert sorted(recorded) == expected


async def test_both_backends_have_the_same_migrations_and_tables(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sqlite_names = [name for _, name, _ in available_migrations("sqlite")]
    postgres_names = [name for _, name, _ in available_migrations("postgres")]
    assert sqlite_names == postgres_names

    tables = {}
    for backend in ("sqlite", "postgres"):
        db = await _open(backend, request, tmp_path)
        try:
            await run_migrations(db)
            tables[backend] = await _tables(db)
        finally:
            await db.close()
    assert tables["sqlite"] == tables["postgres"]
