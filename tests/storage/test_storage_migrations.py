"""Schema migrations apply on SQLite and PostgreSQL, idempotently, to the same tables; a
migration is shared or per dialect, never both; databases made before migrations were
shared upgrade without running anything again."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.forgotten_rooms import ForgottenRoomStore
from peyvand.storage.migrations import available_migrations, run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import RoomID, UserID

# The released migrations: the name every database made since has recorded, and the first
# 16 hex digits of the SHA-256 of the SQL it ran on SQLite and on PostgreSQL. A released
# migration never changes (add a new one); each session's new ones are pinned once landed.
_RELEASED: dict[int, tuple[str, str, str]] = {
    1: ("001_rooms_events.sql", "226cff5daef5eff9", "226cff5daef5eff9"),
    2: ("002_accounts.sql", "28d9e14922518f85", "28d9e14922518f85"),
    3: ("003_push_rules.sql", "b120f1b98aa0cade", "b120f1b98aa0cade"),
    4: ("004_ephemeral.sql", "c412490a7346832a", "c412490a7346832a"),
    5: ("005_forgotten_rooms.sql", "b0d981418dc351c7", "b0d981418dc351c7"),
    6: ("006_directory.sql", "fec95ae74c5e28ad", "fec95ae74c5e28ad"),
    7: ("007_push_actions.sql", "157b689566cd4ccc", "157b689566cd4ccc"),
    8: ("008_event_txns_by_event.sql", "5c64b16d0f41b95b", "5c64b16d0f41b95b"),
    9: ("009_e2e_keys.sql", "fe6155e1a3f14c3a", "fe6155e1a3f14c3a"),
    10: ("010_to_device_device_lists.sql", "1a1fc4f73860966d", "1a1fc4f73860966d"),
    11: ("011_key_backup.sql", "d3766127ddffc300", "d3766127ddffc300"),
    12: ("012_event_txn_on_event.sql", "83e2768ad6d46ea5", "83e2768ad6d46ea5"),
    13: ("013_media.sql", "2e5b937da6b2e7a5", "2e5b937da6b2e7a5"),
    14: ("014_server_keys.sql", "4566ef4ad1ad91b1", "4566ef4ad1ad91b1"),
    15: ("015_federation_outbox.sql", "09d8d5ec78da8add", "09d8d5ec78da8add"),
    16: ("016_federation_events.sql", "5965da254521e2dc", "5965da254521e2dc"),
    17: ("017_remote_devices.sql", "0b0db34c06244c82", "0b0db34c06244c82"),
    18: ("018_remote_invites.sql", "2b45f87247b2b341", "2b45f87247b2b341"),
    19: ("019_audit_log.sql", "c05462392b9a97fa", "fc742c23939af504"),
    20: ("020_legal_holds.sql", "4930c3abff31cdf0", "4781306686d7b3d6"),
    21: ("021_events_by_sender.sql", "c6d72aeba3a70aea", "c6d72aeba3a70aea"),
    22: ("022_invite_policy.sql", "e4ae149a8b6c3873", "e4ae149a8b6c3873"),
    23: ("023_reports.sql", "9caa14a270c6c80e", "9caa14a270c6c80e"),
    24: ("024_purge.sql", "100b6736062206b3", "cfc4d0d78698d5d5"),
    25: ("025_registration_tokens.sql", "ec21fcbfcec2e437", "ec21fcbfcec2e437"),
    26: ("026_guest_accounts.sql", "14972fd11fe5ef33", "14972fd11fe5ef33"),
    27: ("027_pushers.sql", "811b2d0f6afb478b", "811b2d0f6afb478b"),
    28: ("028_partial_state.sql", "7ef11bfb2e10b2ec", "7ef11bfb2e10b2ec"),
    29: ("029_room_push_counts.sql", "97a61a68269f05e3", "97a61a68269f05e3"),
    30: ("030_pending_redactions.sql", "27107ba1899990b6", "27107ba1899990b6"),
    31: ("031_partial_state_completions.sql", "9764b8364ba89e52", "9764b8364ba89e52"),
    32: ("032_search.sql", "1b2464276d70a1ae", "1efb59a6ffbc2188"),
    33: ("033_threads.sql", "843d40d51dc66a41", "843d40d51dc66a41"),
    34: ("034_replaces_state.sql", "ad790f0a7dda1658", "ad790f0a7dda1658"),
    35: ("035_relations_by_stream.sql", "de85312080acc9e5", "de85312080acc9e5"),
    36: ("036_events_by_timestamp.sql", "008a7ef880e80435", "008a7ef880e80435"),
    37: ("037_pusher_progress.sql", "7570c186cf9601cd", "7570c186cf9601cd"),
    39: ("039_thread_read_marks.sql", "45ac39308eea6445", "45ac39308eea6445"),
    40: ("040_threepids.sql", "3e564383f27d428b", "3e564383f27d428b"),
    41: ("041_openid_tokens.sql", "7c55b6444ca87289", "7c55b6444ca87289"),
    42: ("042_profile_fields.sql", "f946284473a98c97", "f946284473a98c97"),
    43: ("043_appservice_txns.sql", "aa8bd0185aeee75b", "aa8bd0185aeee75b"),
    44: ("044_device_inbox_stream.sql", "48ed68bab13d0875", "48ed68bab13d0875"),
    45: ("045_appservice_room_list.sql", "c9d611c1068e3ca4", "c9d611c1068e3ca4"),
    46: ("046_remote_invites_by_stream.sql", "5f7df52c3d485bb4", "5f7df52c3d485bb4"),
    47: ("047_leases.sql", "d2552175d3457eb3", "d2552175d3457eb3"),
    48: ("048_stream_positions.sql", "cd43e22681a6abb4", "cd43e22681a6abb4"),
    49: ("049_push_threads.sql", "2f95114b659a2602", "2f95114b659a2602"),
    50: ("050_current_state_by_position.sql", "f86916e598c3bf6c", "f86916e598c3bf6c"),
    51: ("051_room_writers.sql", "03de051a99e8ad9a", "03de051a99e8ad9a"),
    52: ("052_federation_outbox_seq.sql", "812721ee75602be2", "cffc87c7e496985d"),
    53: ("053_current_state_removals.sql", "33a28fe392fcbe67", "33a28fe392fcbe67"),
    54: ("054_events_current_state_group.sql", "4209d2f9569dc531", "4209d2f9569dc531"),
}
_DIALECTS = ("sqlite", "postgres")

_TABLES_SQL = {
    # Ordinary tables: not an FTS5 table nor its shadow tables (an index on PostgreSQL).
    "sqlite": "SELECT name FROM pragma_table_list"
    " WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite_%'",
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


def test_released_migrations_keep_their_names_and_sql() -> None:
    changed = []
    for index, dialect in enumerate(_DIALECTS, start=1):
        found = {version: (name, sql) for version, name, sql in available_migrations(dialect)}
        for version, released in _RELEASED.items():
            name, sql = found.get(version, ("(missing)", ""))
            digest = hashlib.sha256(sql.encode()).hexdigest()[:16]
            if (name, digest) != (released[0], released[index]):
                changed.append(f"{dialect} {version:03d}: {name} {digest}, released {released}")
    assert not changed, "released migrations changed:\n" + "\n".join(changed)


def test_a_version_is_shared_or_per_dialect(tmp_path: Path) -> None:
    for path, sql in {
        "001_first.sql": "shared 1",
        "sqlite/002_second.sql": "sqlite 2",
        "postgres/002_second.sql": "postgres 2",
        "003_third.sql": "shared 3",
        "README.md": "not a migration",
    }.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(sql, encoding="utf-8")
    assert available_migrations("sqlite", tmp_path) == [
        (1, "001_first.sql", "shared 1"),
        (2, "002_second.sql", "sqlite 2"),
        (3, "003_third.sql", "shared 3"),
    ]
    assert [sql for _, _, sql in available_migrations("postgres", tmp_path)] == [
        "shared 1",
        "postgres 2",
        "shared 3",
    ]

    (tmp_path / "sqlite" / "003_third.sql").write_text("sqlite 3", encoding="utf-8")
    with pytest.raises(RuntimeError, match=r"003_third\.sql and sqlite/003_third\.sql"):
        available_migrations("sqlite", tmp_path)
    assert len(available_migrations("postgres", tmp_path)) == 3

    (tmp_path / "003_other.sql").write_text("shared 3 again", encoding="utf-8")
    with pytest.raises(RuntimeError, match=r"duplicate migration number 003"):
        available_migrations("postgres", tmp_path)
    with pytest.raises(ValueError, match="unknown dialect"):
        available_migrations("mysql", tmp_path)


async def _migrate_as_released(db: SqliteDatabase | PostgresDatabase, up_to: int) -> None:
    """What the runner did before migrations were shared: each released migration up to
    ``up_to``, in one transaction with the row it recorded (its SQL and name are the
    released ones, as ``test_released_migrations_keep_their_names_and_sql`` checks)."""
    await db.executescript(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
    )
    for version, _, sql in available_migrations(db.dialect):
        if version <= up_to:
            name = _RELEASED[version][0]
            await db.executescript(
                f"BEGIN;\n{sql}\nINSERT INTO schema_migrations (version, name)"
                f" VALUES ({version}, '{name}');\nCOMMIT;"
            )


@pytest.mark.parametrize("released_up_to", [23, max(_RELEASED)])
async def test_a_database_from_before_shared_migrations_upgrades_cleanly(
    fresh_database: tuple[str, SqliteDatabase | PostgresDatabase], released_up_to: int
) -> None:
    _, db = fresh_database
    await _migrate_as_released(db, released_up_to)
    recorded = await db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")

    newer = [v for v, _, _ in available_migrations(db.dialect) if v > released_up_to]
    assert await run_migrations(db) == newer
    rows = await db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(row[0], row[1]) for row in rows[: len(recorded)]] == [
        (row[0], row[1]) for row in recorded
    ]

    store = ForgottenRoomStore(db)
    await store.set_forgotten(UserID("@alice:hs.test"), RoomID("!room:hs.test"), True)
    assert await store.get_forgotten(UserID("@alice:hs.test")) == {RoomID("!room:hs.test")}


async def test_processes_migrating_a_fresh_postgres_database_at_once_all_succeed(
    postgres_cluster: PostgresCluster,
) -> None:
    """The processes of a deployment started together each run the migrations: one
    applies them, the others wait for it and find nothing left (without the lock they
    raced to create the same tables and all but one crashed)."""
    dsn = postgres_cluster.create_database("race")
    dbs = [await PostgresDatabase.open(dsn) for _ in range(3)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(run_migrations(db) for db in dbs), return_exceptions=True), 120
        )
    finally:
        for db in dbs:
            await db.close()
    applied = [result for result in results if not isinstance(result, BaseException)]
    assert len(applied) == len(dbs), results
    every = [version for version, _, _ in available_migrations("postgres")]
    assert sorted(applied, key=len) == [[], [], every]
