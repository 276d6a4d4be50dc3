"""The purge store's contract on both backends, and migration 024's index of the media
events named before it (including an event PostgreSQL's jsonb cannot parse)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.database import Database
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import available_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.purge import PurgeStore
from peyvand.storage.remote_invites import RemoteInvite, RemoteInviteStore
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import EventID, RoomID, UserID

ROOM = "!room:hs.test"


async def _insert_room(db: Database) -> None:
    await db.execute(
        "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
        " VALUES ($1, '12', '@alice:hs.test', FALSE, 0)",
        ROOM,
    )


async def _insert_event(
    db: Database, stream: int, event_id: str, content: dict[str, object], *, state_key: str | None
) -> None:
    pdu: dict[str, object] = {
        "type": "m.room.message" if state_key is None else "m.room.topic",
        "room_id": ROOM,
        "sender": "@alice:hs.test",
        "content": content,
        "origin_server_ts": 1000 + stream,
        "depth": stream,
        "prev_events": [],
        "auth_events": [],
        "hashes": {"sha256": "x"},
        "signatures": {},
        **({"state_key": state_key} if state_key is not None else {}),
    }
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
        " depth, origin_server_ts, state_group, pdu) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
        " $9, $10)",
        stream,
        event_id,
        ROOM,
        pdu["type"],
        state_key,
        "@alice:hs.test",
        stream,
        1000 + stream,
        1,
        orjson.dumps(pdu).decode(),
    )


@pytest.fixture
async def old_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """A database at schema 023 (before the purge migration)."""
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "old.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("old"))
    for version, _, sql in available_migrations(db.dialect):
        if version < 24:
            await db.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
    return db


async def test_migration_indexes_media_of_existing_events(
    old_database: SqliteDatabase | PostgresDatabase,
) -> None:
    db = old_database
    try:
        await _insert_room(db)
        await _insert_event(
            db,
            1,
            "$image",
            {
                "url": "mxc://hs.test/img",
                "info": {"thumbnail_url": "mxc://hs.test/thumb"},
                "m.new_content": {"url": "mxc://other.test/edit"},
            },
            state_key=None,
        )
        await _insert_event(
            db, 2, "$nul", {"body": "a\u0000b", "url": "mxc://hs.test/nul"}, state_key=None
        )
        await _insert_event(db, 3, "$junk", {"url": "mxc://nope", "file": 5}, state_key=None)
        [(_, _, sql)] = [m for m in available_migrations(db.dialect) if m[0] == 24]
        await db.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
        rows = await db.fetch("SELECT event_id, origin, media_id FROM event_media")
        found = {(r["event_id"], r["origin"], r["media_id"]) for r in rows}
        expected = {
            ("$image", "hs.test", "img"),
            ("$image", "hs.test", "thumb"),
            ("$image", "other.test", "edit"),
        }
        # PostgreSQL's jsonb refuses U+0000: that event is skipped there, not fatal.
        if db.dialect == "sqlite":
            expected.add(("$nul", "hs.test", "nul"))
        assert found == expected
    finally:
        await db.close()


async def test_purge_keeps_current_state_and_shared_media(database: Database) -> None:
    store = PurgeStore(database)
    await _insert_room(database)
    await _insert_event(
        database, 1, "$a", {"body": "one", "url": "mxc://hs.test/shared"}, state_key=None
    )
    await _insert_event(
        database, 2, "$b", {"body": "two", "url": "mxc://hs.test/shared"}, state_key=None
    )
    await _insert_event(
        database, 3, "$c", {"body": "three", "url": "mxc://hs.test/alone"}, state_key=None
    )
    await _insert_event(database, 4, "$topic", {"topic": "current"}, state_key="")
    await database.executemany(
        "INSERT INTO event_media (event_id, origin, media_id) VALUES ($1, $2, $3)",
        [("$a", "hs.test", "shared"), ("$b", "hs.test", "shared"), ("$c", "hs.test", "alone")],
    )
    await database.execute(
        "INSERT INTO current_state (room_id, type, state_key, event_id, stream_ordering)"
        " VALUES ($1, 'm.room.topic', '', '$topic', 4)",
        ROOM,
    )
    candidates = await store.expired_in_room(ROOM, 10_000, None, 10)
    assert [c.event_id for c in candidates] == ["$a", "$b", "$c"]

    first = await store.purge([EventID("$a"), EventID("$c"), EventID("$topic")], "retention")
    assert sorted(first.event_ids) == ["$a", "$c"]
    # $b still names the shared item; nothing names the other one any more.
    assert first.unreferenced_media == (("hs.test", "alone"),)
    rows = await database.fetch("SELECT event_id FROM events ORDER BY stream_ordering")
    assert [r["event_id"] for r in rows] == ["$b", "$topic"]
    kept = await database.fetch(
        "SELECT event_id, status, reason, pdu FROM event_outliers ORDER BY event_id"
    )
    assert [(r["event_id"], r["status"], r["reason"]) for r in kept] == [
        ("$a", "purged", "retention"),
        ("$c", "purged", "retention"),
    ]
    assert all(orjson.loads(r["pdu"])["content"] == {} for r in kept)

    second = await store.purge([EventID("$b")], "retention")
    assert second.unreferenced_media == (("hs.test", "shared"),)
    # Purging again is a no-op.
    assert await store.purge([EventID("$b")], "retention") == type(second)((), ())

    rewritten = await store.rewrite_content([EventID("$topic")], 5)
    assert rewritten.event_ids == ()


async def test_outliers_lose_their_content_but_keep_their_status(database: Database) -> None:
    store = PurgeStore(database)
    await _insert_room(database)

    def pdu(ts: int, body: str, state_key: str | None = None) -> str:
        event: dict[str, object] = {
            "type": "m.room.message" if state_key is None else "m.room.name",
            "room_id": ROOM,
            "sender": "@mallory:evil.test",
            "content": {"body": body} if state_key is None else {"name": body},
            "origin_server_ts": ts,
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "x"},
            "signatures": {},
            **({"state_key": state_key} if state_key is not None else {}),
        }
        return orjson.dumps(event).decode()

    await database.executemany(
        "INSERT INTO event_outliers (event_id, room_id, status, reason, state_group, pdu)"
        " VALUES ($1, $2, $3, NULL, NULL, $4)",
        [
            ("$soft", ROOM, "soft_failed", pdu(100, "spam")),
            ("$rejected", ROOM, "rejected", pdu(200, "forged")),
            ("$young", ROOM, "outlier", pdu(9_000, "recent")),
            ("$name", ROOM, "outlier", pdu(300, "Room name", state_key="")),
            ("$gone", ROOM, "purged", pdu(50, "already")),
        ],
    )
    await database.execute(
        "INSERT INTO current_state (room_id, type, state_key, event_id, stream_ordering)"
        " VALUES ($1, 'm.room.name', '', '$name', 0)",
        ROOM,
    )
    found: list[str] = []
    cursor: str | None = None
    while True:
        batch, cursor = await store.expired_outliers_in_room(ROOM, 1_000, cursor, 2)
        found += [c.event_id for c in batch]
        if cursor is None:
            break
    assert sorted(found) == ["$rejected", "$soft"]
    result = await store.rewrite_outliers([EventID(e) for e in found], 5)
    assert sorted(result.event_ids) == ["$rejected", "$soft"]
    rows = await database.fetch(
        "SELECT event_id, status, pdu, content_purged_ts FROM event_outliers ORDER BY event_id"
    )
    by_id = {r["event_id"]: r for r in rows}
    for event_id, status in (("$soft", "soft_failed"), ("$rejected", "rejected")):
        assert by_id[event_id]["status"] == status
        assert orjson.loads(by_id[event_id]["pdu"])["content"] == {}
        assert by_id[event_id]["content_purged_ts"] == 5
    assert orjson.loads(by_id["$name"]["pdu"])["content"] == {"name": "Room name"}
    assert orjson.loads(by_id["$young"]["pdu"])["content"] == {"body": "recent"}
    # Done once: nothing is found again.
    assert (await store.expired_outliers_in_room(ROOM, 1_000, None, 10))[0] == []


async def test_the_stream_never_resumes_below_a_purged_event(database: Database) -> None:
    # Disappearing messages can purge the newest events of the server: a restart must not
    # hand their positions out again, below the tokens clients hold.
    store = PurgeStore(database)
    await _insert_room(database)
    for stream, event_id in ((1, "$a"), (2, "$b"), (3, "$c")):
        await _insert_event(database, stream, event_id, {"body": event_id}, state_key=None)
    events = EventStore(database)
    await store.purge([EventID("$c")], "disappearing")
    assert await events.get_max_stream_ordering() == 3
    await store.purge([EventID("$a"), EventID("$b")], "retention")  # lower: kept at 3
    assert await events.get_max_stream_ordering() == 3
    await _insert_event(database, 4, "$d", {"body": "d"}, state_key=None)
    assert await events.get_max_stream_ordering() == 4


async def test_the_stream_never_resumes_below_an_erased_users_remote_invite(
    database: Database,
) -> None:
    # Erasure deletes the user's invites from other servers, whose positions (a decline
    # moves one to the newest) clients already hold in their tokens.
    await _insert_room(database)
    await _insert_event(database, 1, "$a", {"body": "a"}, state_key=None)
    invites = RemoteInviteStore(database)
    invite = RemoteInvite(
        RoomID("!remote:elsewhere.test"),
        UserID("@alice:hs.test"),
        EventID("$invite"),
        "12",
        UserID("@bob:elsewhere.test"),
        "leave",
        5,
        {},
        [],
    )
    await invites.put(invite)
    events = EventStore(database)
    assert await events.get_max_stream_ordering() == 5
    await invites.delete_all_for(UserID("@alice:hs.test"))
    assert await invites.get(invite.room_id, invite.user_id) is None
    assert await events.get_max_stream_ordering() == 5
