"""Storage contract tests run on both backends: ``database`` is a migrated, empty database
of the backend under test (a file under tmp_path, or a new database on the session's
throwaway PostgreSQL cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.database import Database
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase


@pytest.fixture
async def database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Database]:
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "store.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("store"))
    try:
        await run_migrations(db)
        yield db
    finally:
        await db.close()
