"""A user's joined ranges (``NotificationStore.joined_ranges``) read each membership event
once: a later call reads only those after what it has seen, and answers as a fresh read
would, on both backends; and GET /notifications stays right across leaves and joins
once they are known."""

from __future__ import annotations

from typing import Any

from harness.client import MatrixClient, unique_localpart
from peyvand.storage.database import Database, Row
from peyvand.storage.notifications import NotificationStore
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:test")
ROOM = RoomID("!room:test")
OTHER = RoomID("!other:test")


class Recording:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.args: list[tuple[Any, ...]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        if "m.room.member" in sql:
            self.args.append(args)
        return await self._db.fetch(sql, *args)


async def member(db: Database, position: int, room_id: RoomID, membership: str) -> None:
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
        " depth, origin_server_ts, state_group, pdu)"
        " VALUES ($1, $2, $3, 'm.room.member', $4, $4, 1, 0, 0, $5)",
        position,
        EventID(f"$m{position}"),
        room_id,
        ALICE,
        f'{{"content": {{"membership": "{membership}"}}}}',
    )


def spans(ranges: Any) -> list[tuple[str, int, int]]:
    return sorted((r.room_id, r.joined_at, r.left_at) for r in ranges)


async def test_memberships_are_read_once_and_answers_match_a_fresh_read(
    database: Database,
) -> None:
    committed = [6]
    store = NotificationStore(database, lambda: committed[0])
    recording = Recording(database)
    store._db = recording  # type: ignore[assignment]
    await member(database, 1, ROOM, "join")
    await member(database, 3, ROOM, "join")  # a profile change
    await member(database, 5, ROOM, "leave")
    await member(database, 6, OTHER, "join")
    assert spans(await store.joined_ranges(ALICE, before=100)) == [
        (OTHER, 6, 100),
        (ROOM, 1, 5),
    ]
    # Earlier bounds are answered from what was read.
    assert spans(await store.joined_ranges(ALICE, before=4)) == [(ROOM, 1, 4)]
    assert spans(await store.joined_ranges(ALICE, before=6)) == [(ROOM, 1, 5)]
    assert len(recording.args) == 1
    await member(database, 8, ROOM, "join")
    await member(database, 9, OTHER, "leave")
    committed[0] = 9
    got = spans(await store.joined_ranges(ALICE, before=100))
    assert got == [(OTHER, 6, 9), (ROOM, 1, 5), (ROOM, 8, 100)]
    # Only what came after the newest position seen was read again.
    assert recording.args[-1][1] == 7
    fresh = NotificationStore(database, lambda: committed[0])
    assert got == spans(await fresh.joined_ranges(ALICE, before=100))


async def test_a_membership_committed_late_below_the_newest_is_read(database: Database) -> None:
    """Several event writers (issue 21): a membership at a position below the highest
    stored one commits after a read. The read covered only what was committed, so the
    next one finds it."""
    committed = [3]
    store = NotificationStore(database, lambda: committed[0])
    await member(database, 3, ROOM, "join")
    await member(database, 6, OTHER, "join")  # another writer's, committed first
    assert spans(await store.joined_ranges(ALICE, before=100)) == [
        (OTHER, 6, 100),
        (ROOM, 3, 100),
    ]
    await member(database, 5, ROOM, "leave")  # in flight at the first read
    committed[0] = 6
    assert spans(await store.joined_ranges(ALICE, before=100)) == [
        (OTHER, 6, 100),
        (ROOM, 3, 5),
    ]


async def test_notifications_follow_leaves_and_joins(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = (
        await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
    ).ok()["room_id"]
    for account in (bob, carol):
        (await client.request("POST", f"join/{room_id}", json={}, token=account)).ok()

    async def say(body: str) -> str:
        event_id: str = (
            await client.request(
                "PUT",
                f"rooms/{room_id}/send/m.room.message/{unique_localpart('txn')}",
                json={"msgtype": "m.text", "body": body},
                token=alice,
            )
        ).ok()["event_id"]
        return event_id

    async def listed() -> list[str]:
        answer = (await client.request("GET", "notifications", token=bob)).ok()
        return [n["event"]["event_id"] for n in answer["notifications"]]

    first = await say("one")
    assert await listed() == [first]
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    await say("while away")
    assert await listed() == [first]
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    third = await say("back")
    assert await listed() == [third, first]


async def test_users_with_events_are_those_in_rooms_with_later_events(
    database: Database,
) -> None:
    bob, carol = UserID("@bob:test"), UserID("@carol:test")
    for room_id, user_id, membership in [(ROOM, ALICE, "join"), (OTHER, bob, "leave")]:
        await database.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership,"
            " stream_ordering) VALUES ($1, 'm.room.member', $2, $3, $4, 1)",
            room_id,
            user_id,
            f"$cs{user_id}",
            membership,
        )
    await member(database, 5, ROOM, "join")
    await member(database, 8, OTHER, "join")
    store = NotificationStore(database, lambda: 8)
    everyone = [ALICE, bob, carol]
    assert await store.users_with_events(everyone, 0, 10) == {ALICE, bob}
    assert await store.users_with_events(everyone, 5, 10) == {bob}
    assert await store.users_with_events(everyone, 8, 10) == set()
