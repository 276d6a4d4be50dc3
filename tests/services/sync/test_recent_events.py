"""RecentEvents: a room's newest events held as committed answer exactly what
``EventStore.get_room_events`` would, or nothing (issue 15, "hot room")."""

from __future__ import annotations

import random

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.sync.recent_events import EVENTS_PER_ROOM, RecentEvents
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import EventToPersist, StoredEvent
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:example.org")
ROOMS = [RoomID("!a:example.org"), RoomID("!b:example.org")]


def message(room_id: RoomID, stream: int, *, redacts: str | None = None) -> EventToPersist:
    data: dict[str, object] = {
        "type": "m.room.redaction" if redacts else "m.room.message",
        "sender": ALICE,
        "room_id": room_id,
        "content": {"body": str(stream)},
    }
    if redacts:
        data["redacts"] = redacts
        data["content"] = {"redacts": redacts}
    pdu = Pdu(data, EventID(f"$e{stream}"), ROOM_V12)
    return EventToPersist(pdu, stream, 1, None, (ALICE, "DEV", f"t{stream}"), None, None, ())


def model_page(
    stored: list[StoredEvent],
    room_id: RoomID,
    after: int | None,
    before: int | None,
    limit: int,
    newest_first: bool,
) -> list[StoredEvent]:
    """What storage answers: the room's events in (after, before], in order, limited."""
    chosen = sorted(
        (
            e
            for e in stored
            if e.pdu.room_id == room_id
            and (after is None or e.stream_ordering > after)
            and (before is None or e.stream_ordering <= before)
        ),
        key=lambda e: e.stream_ordering,
        reverse=newest_first,
    )
    return chosen[:limit]


def stored_as_committed(event: EventToPersist) -> StoredEvent:
    return StoredEvent(
        event.pdu, event.stream_ordering, 1, None, ("DEV", f"t{event.stream_ordering}")
    )


def new_recent() -> RecentEvents:
    return RecentEvents(StateService(None))  # type: ignore[arg-type]


def test_every_answer_is_what_storage_holds_and_a_woken_sync_is_answered() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        recent = new_recent()
        stored: list[StoredEvent] = []
        position = 0
        # Events stored before anything was held (history a restart left behind).
        for _ in range(rng.randrange(0, 30)):
            position += 1
            stored.append(StoredEvent(message(rng.choice(ROOMS), position).pdu, position, 1))
        for _ in range(40):
            token = position
            batch = []
            for _ in range(rng.randrange(1, 12)):
                position += 1
                batch.append(message(rng.choice(ROOMS), position))
            if rng.random() < 0.2:
                # Backfilled history counts down below every position.
                batch.append(message(ROOMS[0], -rng.randrange(1, 1000)))
            held_before = {
                e.pdu.room_id for e in stored if e.txn is not None and e.stream_ordering > 0
            }
            recent.on_persisted(batch)
            stored.extend(stored_as_committed(e) for e in batch)
            for room_id in ROOMS:
                if room_id in held_before:
                    # The read a woken sync makes (the events since its token) is
                    # answered once the room was held before the token.
                    assert recent.page(
                        room_id, after=token, before=position, limit=50, newest_first=True
                    ) == model_page(stored, room_id, token, position, 50, True)
                for _ in range(30):
                    after = rng.choice([None, rng.randrange(-5, position + 2)])
                    before = rng.choice([None, rng.randrange(-5, position + 2)])
                    limit = rng.randrange(0, 80)
                    newest_first = rng.random() < 0.5
                    held = recent.page(
                        room_id, after=after, before=before, limit=limit, newest_first=newest_first
                    )
                    if held is not None:
                        assert held == model_page(
                            stored, room_id, after, before, limit, newest_first
                        ), (seed, after, before, limit, newest_first)


def test_a_room_holds_a_bounded_tail_and_older_reads_go_to_storage() -> None:
    recent = new_recent()
    room_id = ROOMS[0]
    recent.on_persisted([message(room_id, n) for n in range(1, 201)])
    newest = recent.page(room_id, after=None, before=None, limit=10, newest_first=True)
    assert newest is not None
    assert [e.stream_ordering for e in newest] == list(range(200, 190, -1))
    oldest_held = 200 - EVENTS_PER_ROOM + 1
    assert recent.page(room_id, after=oldest_held - 1, before=None, limit=5, newest_first=False)
    # Below the tail, or more than it holds: storage must answer.
    assert recent.page(room_id, after=10, before=None, limit=5, newest_first=False) is None
    assert recent.page(room_id, after=None, before=None, limit=100, newest_first=True) is None
    assert recent.page(ROOMS[1], after=0, before=None, limit=5, newest_first=True) is None


def test_a_late_event_joins_in_order_and_a_redaction_marks_its_target() -> None:
    recent = new_recent()
    room_id = ROOMS[0]
    recent.on_persisted([message(room_id, 10), message(room_id, 12)])
    recent.on_persisted([message(room_id, 11), message(room_id, 13, redacts="$e10")])
    held = recent.page(room_id, after=9, before=None, limit=10, newest_first=False)
    assert held is not None
    assert [e.stream_ordering for e in held] == [10, 11, 12, 13]
    assert held[0].redacted_by == EventID("$e13")
    assert held[0].txn == ("DEV", "t10")
    # A position older than the tail never joins it (storage keeps it).
    recent.on_persisted([message(room_id, 5)])
    assert recent.page(room_id, after=4, before=None, limit=10, newest_first=False) is None


def test_backfilled_history_is_never_held() -> None:
    recent = new_recent()
    recent.on_persisted([message(ROOMS[0], -3), message(ROOMS[0], -4)])
    # Storage also holds the room's newer events: the newest before a position is not -3.
    assert recent.page(ROOMS[0], after=None, before=100, limit=1, newest_first=True) is None


def test_a_purge_drops_everything_held() -> None:
    state = StateService(None)  # type: ignore[arg-type]
    recent = RecentEvents(state)
    recent.on_persisted([message(ROOMS[0], 1), message(ROOMS[0], 2)])
    assert recent.page(ROOMS[0], after=0, before=None, limit=5, newest_first=True)
    state.forget_events([EventID("$e1")])
    assert recent.page(ROOMS[0], after=0, before=None, limit=5, newest_first=True) is None
