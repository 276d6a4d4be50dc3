"""RecentEvents.state_group_at: a room's state group at a stream position (its newest
event's own, or with ``resolved`` the room's current group after it: at a fork, the
resolved one, not the event's side), answered from what was committed since the room
was first held, exactly as the newest stored event at or before the position tells, or
not at all (issue 15, "hot room")."""

from __future__ import annotations

import random

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.sync.recent_events import GROUP_CHANGES, RecentEvents
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:example.org")
ROOMS = [RoomID("!a:example.org"), RoomID("!b:example.org")]


def event(room_id: RoomID, stream: int, group: int, side: int | None = None) -> EventToPersist:
    """A message leaving the room in ``group``; ``side``: received on one side of a fork,
    whose own group that is."""
    data = {"type": "m.room.message", "sender": ALICE, "room_id": room_id, "content": {}}
    pdu = Pdu(data, EventID(f"$e{stream}"), ROOM_V12)
    if side is None:
        return EventToPersist(pdu, stream, group, None, None, None, None, ())
    return EventToPersist(pdu, stream, side, None, None, None, None, (), current_state_group=group)


def stored_group(
    stored: list[EventToPersist], room_id: RoomID, position: int, resolved: bool
) -> int | None:
    """What storage tells: the state group of the room's newest event at or before the
    position; ``resolved``: the room's current group once it was applied
    (``StoredEvent.current_group``)."""
    found = [e for e in stored if e.pdu.room_id == room_id and 0 < e.stream_ordering <= position]
    if not found:
        return None
    newest = max(found, key=lambda e: e.stream_ordering)
    current = newest.current_state_group
    return newest.state_group if current is None or not resolved else current


def test_every_answer_is_what_storage_tells_and_old_tokens_are_answered() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        recent = RecentEvents(StateService(None))  # type: ignore[arg-type]
        stored: list[EventToPersist] = []
        groups = dict.fromkeys(ROOMS, 1)
        position = 0
        answered_old = 0
        held_back: list[EventToPersist] = []
        for _ in range(60):
            batch, held_back = held_back, []
            for _ in range(rng.randrange(1, 10)):
                position += 1
                room_id = rng.choice(ROOMS)
                if rng.random() < 0.1:
                    groups[room_id] += 1  # a state event
                # Now and then one received over federation: on one side of a fork (its
                # own group that side's, the room's unchanged), or with no fork (its own
                # group the room's, said all the same).
                draw = rng.random()
                side = 10_000 + position if draw < 0.1 else groups[room_id] if draw < 0.15 else None
                new = event(room_id, position, groups[room_id], side)
                # Now and then an event commits after later ones: a late position.
                (held_back if rng.random() < 0.05 else batch).append(new)
            recent.on_persisted(batch)
            stored.extend(batch)
            for room_id in ROOMS:
                for _ in range(20):
                    asked = rng.randrange(-2, position + 3)
                    resolved = rng.random() < 0.5
                    held = recent.state_group_at(room_id, asked, resolved=resolved)
                    if held is not None:
                        expected = stored_group(stored, room_id, asked, resolved)
                        assert held == expected, (seed, asked, resolved)
                        answered_old += asked < position - 40
        assert answered_old, seed  # positions far older than the held events are answered


def test_changes_are_bounded_and_older_positions_go_to_storage() -> None:
    recent = RecentEvents(StateService(None))  # type: ignore[arg-type]
    room_id = ROOMS[0]
    changes = GROUP_CHANGES + 10
    recent.on_persisted([event(room_id, n, n) for n in range(1, changes + 1)])
    oldest_known = changes - GROUP_CHANGES + 1
    assert recent.state_group_at(room_id, changes) == changes
    assert recent.state_group_at(room_id, oldest_known) == oldest_known
    assert recent.state_group_at(room_id, oldest_known - 1) is None
    # A burst of messages in one group is one change, however long.
    recent.on_persisted([event(room_id, n, changes) for n in range(changes + 1, changes + 500)])
    assert recent.state_group_at(room_id, oldest_known) == oldest_known
    assert recent.state_group_at(ROOMS[1], changes) is None


def test_a_purge_forgets_the_groups() -> None:
    state = StateService(None)  # type: ignore[arg-type]
    recent = RecentEvents(state)
    recent.on_persisted([event(ROOMS[0], 1, 7)])
    assert recent.state_group_at(ROOMS[0], 5) == 7
    state.forget_events([EventID("$e1")])
    assert recent.state_group_at(ROOMS[0], 5) is None
