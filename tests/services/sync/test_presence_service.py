"""PresenceService on fakes and an injected clock: the idle / offline / currently_active
timeouts of the sweep, and the cost of one change in a 1,000-member room (Client-Server
API, "Presence")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from harness.service_fakes import FakeRoom, RecordingNotifier
from peyvand.services.sync.presence import (
    IDLE_TIMER_MS,
    LAST_ACTIVE_GRANULARITY_MS,
    MANY_CHANGES,
    SYNC_ONLINE_TIMEOUT_MS,
    PresenceService,
)
from peyvand.services.sync.streams import Stream
from peyvand.types import RoomID, ServerName, UserID

BIG_ROOM = RoomID("!big:localhost")
OTHER_ROOM = RoomID("!other:localhost")
START_MS = 1_700_000_000_000


@dataclass
class FakeWorld:
    """RoomIndex and StateService at once, counting what is asked of them."""

    rooms: dict[RoomID, FakeRoom]
    index_reads: int = 0
    room_reads: int = 0

    async def memberships(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        self.index_reads += 1
        return {
            room_id: (room.memberships[user_id], 1)
            for room_id, room in self.rooms.items()
            if user_id in room.memberships
        }

    async def get_room(self, room_id: RoomID) -> FakeRoom | None:
        self.room_reads += 1
        return self.rooms.get(room_id)


class Clock:
    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


def user(n: int) -> UserID:
    return UserID(f"@u{n}:localhost")


def service(world: FakeWorld, notifier: RecordingNotifier, clock: Clock) -> PresenceService:
    return PresenceService(
        ServerName("localhost"),
        cast(Any, world),
        cast(Any, world),
        cast(Any, notifier),
        wall_clock_ms=clock,
    )


async def status(presence: PresenceService, user_id: UserID) -> str:
    got: str = (await presence.get_status(user_id, user_id))["presence"]
    return got


async def test_timeouts_of_the_sweep() -> None:
    alice, bob = user(1), user(2)
    world = FakeWorld({OTHER_ROOM: FakeRoom({alice: "join", bob: "join"})})
    notifier, clock = RecordingNotifier(), Clock()
    presence = service(world, notifier, clock)

    # Offline 30 s after the last sync ended, not before, and never while one runs.
    async with presence.syncing(alice, "online"):
        assert await status(presence, alice) == "online"
        clock.now += SYNC_ONLINE_TIMEOUT_MS * 2
        await presence.sweep()
        assert await status(presence, alice) == "online"
    clock.now += SYNC_ONLINE_TIMEOUT_MS - 1
    await presence.sweep()
    assert await status(presence, alice) == "online"
    clock.now += 2
    await presence.sweep()
    assert await status(presence, alice) == "offline"
    assert notifier.woken[-1][2] == {alice, bob}

    # Idle for 5 minutes while syncing: unavailable; currently_active ends after 1 minute.
    async with presence.syncing(bob, "online"):
        clock.now += LAST_ACTIVE_GRANULARITY_MS + 1
        await presence.sweep()
        content = await presence.get_status(alice, bob)
        assert (content["presence"], content["currently_active"]) == ("online", False)
        clock.now += IDLE_TIMER_MS
        await presence.sweep()
        assert await status(presence, bob) == "unavailable"
        # A sweep with nothing due changes nothing and wakes nobody.
        woken = len(notifier.woken)
        await presence.sweep()
        assert len(notifier.woken) == woken


async def test_one_change_in_a_1000_member_room_costs_its_members_only() -> None:
    """One user of a 1,000-member room changes presence while 1,000 other users are
    online elsewhere: exactly the room's members are woken, and each member's sync reads
    one change, not the 1,000 others'."""
    members = [user(n) for n in range(1000)]
    others = [user(n) for n in range(1000, 2000)]
    world = FakeWorld(
        {
            BIG_ROOM: FakeRoom(dict.fromkeys(members, "join")),
            OTHER_ROOM: FakeRoom(dict.fromkeys(others, "join")),
        }
    )
    notifier, clock = RecordingNotifier(), Clock()
    presence = service(world, notifier, clock)
    for other in others:
        await presence.set_status(other, other, "online", None)
    since = presence.current_position

    world.index_reads = world.room_reads = 0
    await presence.set_status(members[0], members[0], "unavailable", "away")
    stream, _, woken = notifier.woken[-1]
    assert stream is Stream.PRESENCE
    assert woken == set(members)
    assert (world.index_reads, world.room_reads) == (1, 1)

    world.index_reads = world.room_reads = 0
    started = time.perf_counter()
    for member in members[1:]:
        events = await presence.for_sync(member, since)
        assert [e["sender"] for e in events] == [members[0]]
    elapsed = time.perf_counter() - started
    # Per reader: its own rooms, and the one changed user's rooms; no room read at all.
    assert world.index_reads == 2 * 999
    assert world.room_reads == 0
    print(f"999 incremental presence reads after one change: {elapsed * 1000:.1f} ms")
    assert elapsed < 2.0


async def test_an_old_token_walks_the_readers_rooms_instead() -> None:
    """After more than MANY_CHANGES changes since a token, a sync reads its own rooms
    once instead of each changed user's rooms; the answer is the same."""
    members = [user(n) for n in range(10)]
    others = [user(n) for n in range(1000, 1000 + MANY_CHANGES + 50)]
    world = FakeWorld(
        {
            BIG_ROOM: FakeRoom(dict.fromkeys(members, "join")),
            OTHER_ROOM: FakeRoom(dict.fromkeys(others, "join")),
        }
    )
    notifier, clock = RecordingNotifier(), Clock()
    presence = service(world, notifier, clock)
    since = presence.current_position
    await presence.set_status(members[1], members[1], "online", "here")
    for other in others:
        await presence.set_status(other, other, "online", None)
    world.index_reads = world.room_reads = 0
    events = await presence.for_sync(members[0], since)
    assert [e["sender"] for e in events] == [members[1]]
    assert events[0]["content"]["status_msg"] == "here"
    assert (world.index_reads, world.room_reads) == (1, 1)


async def test_an_initial_sync_in_a_big_room_gets_those_awake_and_the_same_either_way() -> None:
    """A newcomer's initial sync in a 10,000-member room where few are awake gets exactly
    the awake members (and itself), walking those awake rather than the members; with
    more awake than members it walks the members. Either way the answer is Synapse's:
    everyone sharing a room who is not offline."""
    members = [user(n) for n in range(10_000)]
    stranger = user(20_000)
    world = FakeWorld(
        {
            BIG_ROOM: FakeRoom(dict.fromkeys(members, "join")),
            OTHER_ROOM: FakeRoom({stranger: "join"}),
        }
    )
    notifier, clock = RecordingNotifier(), Clock()
    presence = service(world, notifier, clock)
    newcomer, awake = members[0], [members[5], members[7000]]
    for someone in [newcomer, *awake, stranger]:
        await presence.set_status(someone, someone, "online", None)
    await presence.set_status(members[9], members[9], "offline", None)

    started = time.perf_counter()
    events = await presence.for_sync(newcomer, None)
    elapsed = time.perf_counter() - started
    assert sorted(e["sender"] for e in events) == sorted([newcomer, *awake])
    print(f"a newcomer's initial presence among 10,000 members: {elapsed * 1000:.2f} ms")

    few = members[:300]
    world.rooms = {BIG_ROOM: FakeRoom(dict.fromkeys(few, "join"))}
    for someone in few:
        await presence.set_status(someone, someone, "online", None)
    await presence.set_status(members[9], members[9], "offline", None)
    events = await presence.for_sync(newcomer, None)
    assert {e["sender"] for e in events} == set(few) - {members[9]}
