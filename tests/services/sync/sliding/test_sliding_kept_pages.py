"""InitialTimelines: a kept page is served only while the room is as it was read; a
redaction that does not move the room's newest position (received in backfill) still
ends it, since the page holds the events as they were before it."""

from __future__ import annotations

from dataclasses import replace

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.sync.sliding.initial_timelines import InitialTimelines, PageKey, RoomMark
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, RoomID, UserID

ROOM = RoomID("!room")
KEY = PageKey(UserID("@alice:example.org"), ROOM, 1, 1)
MARK = RoomMark(position=5, state_group=2, epoch=0, redactions=0, ignored=frozenset())


def _message(position: int) -> StoredEvent:
    body = {"type": "m.room.message", "sender": "@bob:example.org", "room_id": ROOM}
    return StoredEvent(Pdu(body, EventID(f"$e{position}"), ROOM_V12), position, 2)


def test_a_redaction_elsewhere_in_the_stream_ends_a_kept_page() -> None:
    pages = InitialTimelines()
    pages.put(KEY, MARK, [_message(5)], limited=True, end=5)
    assert [e.stream_ordering for e in pages.get(KEY, MARK) or []] == [5]
    assert pages.get(KEY, replace(MARK, redactions=1)) is None
    assert pages.get(KEY, replace(MARK, position=6)) is None


def test_pages_that_backfill_could_change_are_not_kept() -> None:
    pages = InitialTimelines()
    pages.put(KEY, MARK, [_message(5)], limited=False, end=5)
    pages.put(replace(KEY, limit=2), MARK, [_message(-1), _message(5)], limited=True, end=5)
    assert pages.get(KEY, MARK) is None
    assert pages.get(replace(KEY, limit=2), MARK) is None
