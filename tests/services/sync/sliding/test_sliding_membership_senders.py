"""MembershipSenders: who sent a user's membership, read once per membership, from the
cached snapshots or else one query for all the other rooms."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import SimpleNamespace

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.sync.sliding.membership_senders import MembershipSenders
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")
CACHED, STORED, REMOTE = RoomID("!cached"), RoomID("!stored"), RoomID("!remote")


def member(event_id: str, room_id: RoomID, sender: UserID, membership: str) -> Pdu:
    return Pdu(
        {"type": "m.room.member", "state_key": ALICE, "sender": sender, "room_id": room_id,
         "content": {"membership": membership}},
        EventID(event_id),
        ROOM_V12,
    )  # fmt: skip


class State:
    """The state service's cached snapshots and events, and the store's one query."""

    def __init__(self) -> None:
        self.events = {
            EventID("$kick"): member("$kick", CACHED, BOB, "leave"),
            EventID("$left"): member("$left", STORED, ALICE, "leave"),
        }
        self.snapshots = {CACHED: SimpleNamespace(state={("m.room.member", ALICE): "$kick"})}
        self.stored = {STORED: EventID("$left")}
        self.loads: list[list[RoomID]] = []

    def cached_room(self, room_id: RoomID) -> object | None:
        return self.snapshots.get(room_id)

    async def get_pdus(self, event_ids: Iterable[EventID]) -> dict[EventID, Pdu]:
        return {e: self.events[e] for e in event_ids if e in self.events}

    async def load(self, user_id: UserID, room_ids: Sequence[RoomID]) -> dict[RoomID, EventID]:
        self.loads.append(list(room_ids))
        return {r: self.stored[r] for r in room_ids if r in self.stored}


async def test_senders_are_read_once_from_snapshots_or_one_query() -> None:
    state = State()
    senders = MembershipSenders(state, state.load)  # type: ignore[arg-type]
    left = {CACHED: 5, STORED: 6, REMOTE: 7}
    assert await senders.senders(ALICE, "leave", left) == {CACHED: BOB, STORED: ALICE}
    assert state.loads == [[STORED, REMOTE]]
    assert await senders.senders(ALICE, "leave", left) == {CACHED: BOB, STORED: ALICE}
    assert state.loads == [[STORED, REMOTE]]  # nothing read again


async def test_a_newer_membership_than_asked_about_is_not_kept() -> None:
    state = State()
    senders = MembershipSenders(state, state.load)  # type: ignore[arg-type]
    # The index says invite at 4; the room's member event is already the leave.
    assert await senders.senders(ALICE, "invite", {CACHED: 4}) == {}
    state.events[EventID("$kick")] = member("$kick", CACHED, BOB, "invite")
    assert await senders.senders(ALICE, "invite", {CACHED: 4}) == {CACHED: BOB}
