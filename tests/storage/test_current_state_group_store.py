"""``events.current_state_group`` on both backends: each event keeps the room's current
state group it was applied into when that is not its own group (an event received on
one side of a fork), and reads back with ``current_group`` as /sync takes the state a
client was given at a token (``services.rooms.reads.state_group_at``)."""

from __future__ import annotations

from typing import Any

from harness.stored_pdus import stored_pdu
from peyvand.events.pdu import Pdu
from peyvand.storage.database import Database
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist, RoomRow
from peyvand.types import EventID, RoomID

ROOM = RoomID("!room:here.test")


def _pdu(event_id: str, event_type: str, **extra: Any) -> Pdu:
    return stored_pdu(event_id, ROOM, "@alice:here.test", event_type, **extra)


def _persisted(pdu: Pdu, stream: int, group: int, **extra: Any) -> EventToPersist:
    return EventToPersist(pdu, stream, group, None, None, None, None, (pdu.event_id,), **extra)


async def test_an_event_keeps_the_current_group_it_left_the_room_in(database: Database) -> None:
    store = EventStore(database)
    batch = [
        _persisted(
            _pdu("$create", "m.room.create", state_key=""),
            1,
            1,
            new_room=RoomRow(ROOM, "10", "@alice:here.test", False, 1000),
            current_state_group=1,
        ),
        # A local message: the room's group stays its own.
        _persisted(_pdu("$words", "m.room.message"), 2, 1),
        # Received on one side of a fork: its side's group 2, the room resolved to 3.
        _persisted(_pdu("$remote", "m.room.message"), 3, 2, current_state_group=3),
        # A message after it, on the resolved state.
        _persisted(_pdu("$after", "m.room.message"), 4, 3, current_state_group=3),
    ]
    async with database.transaction() as txn:
        await store.persist_events(txn, batch)

    events = await store.get_room_events(
        ROOM, after=None, before=None, limit=10, newest_first=False
    )
    assert [(e.pdu.event_id, e.state_group, e.current_group) for e in events] == [
        ("$create", 1, 1),
        ("$words", 1, 1),
        ("$remote", 2, 3),
        ("$after", 3, 3),
    ]
    # Stored only where it differs from the event's own group.
    assert [e.current_state_group for e in events] == [None, None, 3, None]
    found = await store.get_events([EventID("$remote")])
    assert found[EventID("$remote")].current_group == 3
