"""RoomIndex: per-user memberships and per-room positions kept in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:example.org")
ROOM_A = RoomID("!a")
ROOM_B = RoomID("!b")


class FakeStore:
    """The two EventStore reads the index makes, with a gate to interleave a commit."""

    def __init__(self) -> None:
        self.memberships: dict[RoomID, tuple[str, int]] = {ROOM_A: ("join", 5)}
        self.changed: set[RoomID] = {ROOM_B}
        self.gate: asyncio.Event | None = None
        self.loads = 0
        self.range_queries: list[tuple[list[RoomID], int, int]] = []

    async def get_max_stream_ordering(self) -> int:
        return 10

    async def get_memberships_for_user(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        self.loads += 1
        snapshot = dict(self.memberships)
        if self.gate is not None:
            await self.gate.wait()
        return snapshot

    async def get_rooms_with_events_since(
        self, room_ids: Sequence[RoomID], since: int, until: int
    ) -> set[RoomID]:
        self.range_queries.append((list(room_ids), since, until))
        return self.changed & set(room_ids)


def member(room_id: RoomID, membership: str, stream: int) -> EventToPersist:
    pdu = Pdu(
        {"type": "m.room.member", "state_key": ALICE, "sender": ALICE, "room_id": room_id,
         "content": {"membership": membership}},
        EventID(f"$m{stream}"),
        ROOM_V12,
    )  # fmt: skip
    return EventToPersist(pdu, stream, 1, None, None, None, None, ())


async def make() -> tuple[RoomIndex, FakeStore]:
    store = FakeStore()
    index = RoomIndex(store)  # type: ignore[arg-type]
    await index.start()
    return index, store


async def test_memberships_load_once_then_follow_commits() -> None:
    index, store = await make()
    assert await index.memberships(ALICE) == {ROOM_A: ("join", 5)}
    index.apply([member(ROOM_B, "invite", 11)])
    assert await index.memberships(ALICE) == {ROOM_A: ("join", 5), ROOM_B: ("invite", 11)}
    assert store.loads == 1


async def test_a_load_that_raced_a_commit_is_not_cached() -> None:
    index, store = await make()
    store.gate = asyncio.Event()
    loading = asyncio.create_task(index.memberships(ALICE))
    await asyncio.sleep(0)
    index.apply([member(ROOM_B, "join", 11)])  # committed while the load was in flight
    store.gate.set()
    assert await loading == {ROOM_A: ("join", 5)}  # what the database said then
    store.gate = None
    store.memberships[ROOM_B] = ("join", 11)
    assert await index.memberships(ALICE) == {ROOM_A: ("join", 5), ROOM_B: ("join", 11)}
    assert store.loads == 2


async def test_rooms_changed_since_start_need_no_query() -> None:
    index, store = await make()
    index.apply([member(ROOM_A, "join", 12)])
    assert await index.rooms_changed_since([ROOM_A, ROOM_B], 11) == {ROOM_A}
    assert await index.rooms_changed_since([ROOM_A, ROOM_B], 12) == set()
    assert store.range_queries == []


async def test_tokens_from_before_start_ask_the_database_for_unknown_rooms() -> None:
    index, store = await make()
    index.apply([member(ROOM_A, "join", 12)])
    assert await index.rooms_changed_since([ROOM_A, ROOM_B], 3) == {ROOM_A, ROOM_B}
    assert store.range_queries == [([ROOM_B], 3, 10)]


async def test_versioned_memberships_keep_their_token_until_a_change() -> None:
    index, _ = await make()
    first, token = await index.versioned_memberships(ALICE)
    assert first == {ROOM_A: ("join", 5)} and token is not None
    assert (await index.versioned_memberships(ALICE))[1] == token
    index.apply([member(ROOM_B, "join", 11)])
    changed, after = await index.versioned_memberships(ALICE)
    assert changed[ROOM_B] == ("join", 11)
    assert after is not None and after != token
    index.note_remote_invite(ALICE, RoomID("!remote"), "invite", 12)
    assert (await index.versioned_memberships(ALICE))[1] not in (None, token, after)


async def test_versioned_memberships_of_a_load_that_raced_a_commit_have_no_token() -> None:
    index, store = await make()
    store.gate = asyncio.Event()
    loading = asyncio.create_task(index.versioned_memberships(ALICE))
    await asyncio.sleep(0)
    index.apply([member(ROOM_B, "join", 11)])
    store.gate.set()
    assert await loading == ({ROOM_A: ("join", 5)}, None)
