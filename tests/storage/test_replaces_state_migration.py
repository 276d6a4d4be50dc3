"""Migration 034 fills ``events.replaces_state`` for the state events stored before it,
from the state groups, with exactly what the writer records for new events; after the
upgrade those events are served with ``unsigned.prev_content`` (Client-Server API, "Room
event format"), on SQLite and PostgreSQL.

A real server writes rooms with long chains of state changes (so the state before an
event is spread over several Fenwick deltas) and messages between them; stopped, its
database is taken back to before 034 (the column dropped, the version row deleted), and
the migration runner brings it up again."""

from __future__ import annotations

from urllib.parse import quote

from harness.client import Account, MatrixClient, new_session
from harness.database import query
from harness.rooms import say, shared_room
from harness.server import HomeserverProcess
from peyvand.config.loader import load_config
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase

_VERSION = 34
_STATE_EVENTS = "SELECT event_id, replaces_state FROM events WHERE state_key IS NOT NULL"


async def _fill_rooms(client: MatrixClient) -> tuple[str, str, Account]:
    """Two rooms with interleaved state changes and messages; the first room's ID, its
    last topic event and the reader."""
    rooms = [await shared_room(client) for _ in range(2)]
    last_topic = ""
    for step in range(13):
        for alice, bob, room_id in rooms:
            room = quote(room_id)
            put = await client.request(
                "PUT",
                f"rooms/{room}/state/m.room.topic",
                json={"topic": f"topic {step}"},
                token=alice,
            )
            if room_id == rooms[0][2]:
                last_topic = put.ok()["event_id"]
            member = f"rooms/{room}/state/m.room.member/{quote(bob.user_id)}"
            (
                await client.request(
                    "PUT",
                    member,
                    json={"membership": "join", "displayname": f"bob {step}"},
                    token=bob,
                )
            ).ok()
            await say(client, room_id, alice, f"message {step}")
    return rooms[0][2], last_topic, rooms[0][0]


async def _back_to_033(server: HomeserverProcess) -> None:
    """Drop what 034 added and forget it ran, then run the migrations again."""
    database = load_config(server.config_path).database
    db: SqliteDatabase | PostgresDatabase
    if database.is_postgres:
        db = await PostgresDatabase.open(database.url)
    else:
        db = await SqliteDatabase.open(database.sqlite_path)
    try:
        await db.executescript(
            "BEGIN;\nALTER TABLE events DROP COLUMN replaces_state;\n"
            f"DELETE FROM schema_migrations WHERE version = {_VERSION};\nCOMMIT;"
        )
        assert await run_migrations(db) == [_VERSION]
    finally:
        await db.close()


async def test_migration_fills_replaces_state_as_the_writer_does(
    private_homeserver: HomeserverProcess,
) -> None:
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        room_id, last_topic, reader = await _fill_rooms(client)
    written = dict(await query(private_homeserver, _STATE_EVENTS))
    # Every topic and display name change after the first of its key replaced one.
    assert sum(1 for replaced in written.values() if replaced is not None) >= 2 * 2 * 12

    private_homeserver.stop()
    await _back_to_033(private_homeserver)
    private_homeserver.start()

    assert dict(await query(private_homeserver, _STATE_EVENTS)) == written
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        event = (
            await client.request(
                "GET", f"rooms/{quote(room_id)}/event/{quote(last_topic)}", token=reader
            )
        ).ok()
    assert event["unsigned"]["replaces_state"] == written[last_topic]
    assert event["unsigned"]["prev_content"] == {"topic": "topic 11"}
