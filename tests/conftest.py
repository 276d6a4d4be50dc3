"""Session-wide fixtures: real Peyvand servers (SQLite and PostgreSQL) and a client.

- ``backend``: "sqlite" or "postgres"; every test that uses a server runs on both
  (``-m "not postgres"`` skips the PostgreSQL half).
- ``homeserver``: a ``HomeserverProcess`` shared by the whole session (one per backend),
  with ``base_url``, ``server_name``, ``config_path``, ``log()`` and
  ``kill_and_restart()``. Register fresh users (``client.register()`` picks unique names).
- ``private_homeserver``: a server of the test's own, for tests that break or restart it.
- ``client``: a ``MatrixClient`` for ``homeserver``.
- ``postgres_cluster``: the session's throwaway PostgreSQL cluster.
- ``database``: a migrated, empty database of ``backend`` for the test alone.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from harness.client import MatrixClient, new_session
from harness.postgres import PostgresCluster, PostgresUnavailable
from harness.server import HomeserverProcess, start_homeserver
from peyvand.storage.database import Database
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase

# Property tests check correctness, not speed: on a loaded CI machine an example may take
# longer than hypothesis's 200 ms default deadline without anything being wrong.
settings.register_profile("peyvand", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("peyvand")

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway cluster for the session; skipped (failed under CI) without PostgreSQL."""
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not installed: {exc}")
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test."""
    name: str = request.param
    return name


@pytest.fixture
async def database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Database]:
    """A migrated, empty database of ``backend`` (a file under tmp_path, or a new
    database on the session's throwaway PostgreSQL cluster), for tests of services over
    real storage and storage's own contract tests."""
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


@pytest.fixture(scope="session")
def homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """The session's server for ``backend``."""
    server = start_homeserver(backend, request, tmp_path_factory.mktemp(f"homeserver-{backend}"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HomeserverProcess]:
    """A server for this test alone (to kill, restart or misconfigure)."""
    server = start_homeserver(backend, request, tmp_path / "homeserver")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    """A JSON client for ``homeserver``."""
    async with new_session() as session:
        yield MatrixClient(session, homeserver.base_url)
