"""UserRooms: a user's listed rooms held in list order between requests, caught up
from the bump stamps' log, rebuilt when memberships or forgotten rooms change or the
log no longer reaches back."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.sync.sliding.bump_stamps import BumpStamps
from peyvand.services.sync.sliding.user_rooms import UserRooms
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")
A, B, C, D = RoomID("!a"), RoomID("!b"), RoomID("!c"), RoomID("!d")


class World:
    """The stores UserRooms reads, in memory, with counts of what was read."""

    def __init__(self, memberships: dict[RoomID, tuple[str, int]], position: int) -> None:
        self.memberships = memberships
        self.position = position
        # room -> its newest event's position in the "database".
        self.newest: dict[RoomID, int] = {r: p for r, (_, p) in memberships.items()}
        self.forgotten: set[RoomID] = set()
        self.forgotten_reads = 0
        self.kicked: set[RoomID] = set()
        # Builds of the held rooms read who sent the leaves (when there are any).
        self.sender_reads = 0

    async def get_max_stream_ordering(self) -> int:
        return self.position

    async def get_memberships_for_user(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        return dict(self.memberships)

    async def load_stamps(
        self, room_ids: Sequence[RoomID], types: Sequence[str] | None, until: int
    ) -> dict[RoomID, int]:
        return {r: self.newest[r] for r in room_ids if r in self.newest}

    async def get_forgotten(self, user_id: UserID) -> set[RoomID]:
        self.forgotten_reads += 1
        return set(self.forgotten)

    async def senders(
        self, user_id: UserID, membership: str, rooms: Mapping[RoomID, int]
    ) -> dict[RoomID, str]:
        """A leave is sent by BOB in the kicked rooms, by the user in the others."""
        self.sender_reads += 1
        return {r: BOB if r in self.kicked else user_id for r in rooms}


class Senders:
    def __init__(self, world: World) -> None:
        self.senders = world.senders


async def no_one_ignored(user_id: UserID) -> frozenset[UserID]:
    return frozenset()


async def make(
    memberships: dict[RoomID, tuple[str, int]], *, moves: int = 4_096
) -> tuple[UserRooms, World, RoomIndex, BumpStamps]:
    world = World(memberships, max(p for _, p in memberships.values()))
    index = RoomIndex(world)  # type: ignore[arg-type]
    await index.start()
    stamps = BumpStamps(world.load_stamps, lambda: world.position, moves=moves)
    rooms = UserRooms(
        index,
        stamps,
        world.get_forgotten,
        Senders(world),  # type: ignore[arg-type]
        ignored_by=no_one_ignored,
        invites=None,  # type: ignore[arg-type]
    )
    return rooms, world, index, stamps


def event(
    world: World, room_id: RoomID, event_type: str = "m.room.message", **fields: str
) -> list[EventToPersist]:
    """A committed event at the next position (told to the stores as the dispatcher does)."""
    world.position += 1
    world.newest[room_id] = world.position
    content = {"membership": fields["membership"]} if "membership" in fields else {}
    body = {"type": event_type, "sender": BOB, "room_id": room_id, "content": content}
    if "state_key" in fields:
        body["state_key"] = fields["state_key"]
    pdu = Pdu(body, EventID(f"$e{world.position}"), ROOM_V12)
    return [EventToPersist(pdu, world.position, 1, None, None, None, None, ())]


def commit(world: World, index: RoomIndex, stamps: BumpStamps, batch: list[EventToPersist]) -> None:
    index.apply(batch)
    stamps.on_persisted(batch)


async def order(rooms: UserRooms, world: World, since: int | None = None) -> list[RoomID]:
    return list((await rooms.listed(ALICE, since, world.position)).order)


async def test_a_message_moves_its_room_to_the_top_without_a_rebuild() -> None:
    rooms, world, index, stamps = await make(
        {A: ("join", 1), B: ("join", 2), C: ("ban", 3), D: ("leave", 4)}
    )
    world.kicked.add(D)
    assert await order(rooms, world) == [D, C, B, A]
    commit(world, index, stamps, event(world, A))
    assert await order(rooms, world) == [A, D, C, B]
    # A message in a room the user is banned or kicked from does not move it.
    commit(world, index, stamps, event(world, C))
    commit(world, index, stamps, event(world, D))
    listed = await rooms.listed(ALICE, None, world.position)
    assert list(listed.order) == [A, D, C, B]
    assert listed.rooms[A].bump_stamp == 5 and listed.joined == {A, B}
    assert world.sender_reads == 1  # built once, then caught up


async def test_a_membership_change_rebuilds() -> None:
    rooms, world, index, stamps = await make({A: ("join", 1), B: ("join", 2)})
    assert await order(rooms, world) == [B, A]
    commit(
        world, index, stamps, event(world, D, "m.room.member", state_key=ALICE, membership="invite")
    )
    assert await order(rooms, world) == [D, B, A]
    commit(
        world, index, stamps, event(world, D, "m.room.member", state_key=ALICE, membership="join")
    )
    commit(world, index, stamps, event(world, B))
    listed = await rooms.listed(ALICE, None, world.position)
    assert list(listed.order) == [B, D, A] and listed.joined == {A, B, D}


async def test_a_left_room_is_listed_only_after_the_leave() -> None:
    rooms, world, index, stamps = await make({A: ("join", 1), B: ("join", 2)})
    assert await order(rooms, world) == [B, A]
    before = world.position
    commit(
        world, index, stamps, event(world, A, "m.room.member", state_key=ALICE, membership="leave")
    )
    assert await order(rooms, world) == [B]
    assert await order(rooms, world, since=before) == [A, B]
    assert (await rooms.listed(ALICE, before, world.position)).rooms[A].membership == "leave"
    assert await order(rooms, world, since=world.position) == [B]
    # A request at a position before the leave leaves out the room it cannot show yet.
    assert list((await rooms.listed(ALICE, None, before)).order) == [B]


async def test_forgetting_a_room_drops_it_at_once() -> None:
    rooms, world, _, _ = await make({A: ("join", 1), B: ("ban", 2), C: ("leave", 3)})
    world.kicked.add(C)
    assert await order(rooms, world) == [C, B, A]
    world.forgotten.add(B)
    rooms.forgotten_changed(ALICE)
    assert await order(rooms, world) == [C, A]
    assert world.forgotten_reads == 2
    world.forgotten.add(C)
    rooms.forgotten_changed(ALICE)
    assert await order(rooms, world) == [A]


async def test_more_moves_than_the_log_holds_rebuild() -> None:
    rooms, world, index, stamps = await make(
        {A: ("join", 1), B: ("join", 2), C: ("join", 3), D: ("leave", 4)}, moves=2
    )
    world.kicked.add(D)
    assert await order(rooms, world) == [D, C, B, A]
    commit(world, index, stamps, event(world, A))
    commit(world, index, stamps, event(world, B))
    assert await order(rooms, world) == [B, A, D, C]
    assert world.sender_reads == 1  # the log reached back
    for room_id in (C, A, B):
        commit(world, index, stamps, event(world, room_id))
    assert await order(rooms, world) == [B, A, C, D]
    assert world.sender_reads == 2  # it did not: rebuilt
    assert world.forgotten_reads == 1  # held until it changes


async def test_catching_up_agrees_with_a_rebuild() -> None:
    joined = {RoomID(f"!r{i:02}"): ("join", i + 1) for i in range(40)}
    rooms, world, index, stamps = await make(dict(joined), moves=64)
    rng = random.Random(18)
    await order(rooms, world)
    for _ in range(30):
        for _ in range(rng.randrange(5)):
            commit(world, index, stamps, event(world, rng.choice(list(joined))))
        caught_up = await order(rooms, world)
        assert caught_up == sorted(joined, key=lambda r: (-world.newest[r], r))


async def test_rooms_left_count_against_the_bound() -> None:
    """The rooms a user left (not listed without a ``since``) are held too, so they
    count: a user with more than the bound is not held, and is built again each time."""
    left = {RoomID(f"!left{i}"): ("leave", i + 1) for i in range(20)}
    _, world, index, stamps = await make(left)
    rooms = UserRooms(
        index,
        stamps,
        world.get_forgotten,
        Senders(world),  # type: ignore[arg-type]
        ignored_by=no_one_ignored,
        invites=None,  # type: ignore[arg-type]
        rooms=10,
    )
    assert await order(rooms, world) == []
    assert await order(rooms, world) == []
    assert world.sender_reads == 2


async def test_a_forgotten_room_joined_or_invited_to_again_is_listed() -> None:
    """A join or an invite over federation does not clear the forgotten mark; the room is
    listed all the same (only rooms left or banned from stay forgotten)."""
    rooms, world, _, _ = await make({A: ("invite", 1), B: ("join", 2), C: ("leave", 3)})
    world.forgotten |= {A, B, C}
    listed = await rooms.listed(ALICE, 0, world.position)
    assert set(listed.order) == {A, B}
