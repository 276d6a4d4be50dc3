"""PushActionsService.counted: what each committed event's rows add to a member's unread
counts (its room row, plus the member's exception), as ``prepare`` wrote them; nothing
when the evaluation failed, even if an earlier try of the same commit remembered it
(issue 18: sliding sync brings kept counts up to date from it), in the event's thread;
nothing for an event stored already redacted."""

from __future__ import annotations

import dataclasses
from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.push import actions
from peyvand.services.push.actions import Counted, PushActionsService
from peyvand.storage.models import EventToPersist
from peyvand.storage.push_actions import RoomNotification, UserException
from peyvand.types import EventID, RoomID, ServerName, UserID

ROOM = RoomID("!room:example.org")
ALICE, BOB, CAROL = (UserID(f"@{n}:example.org") for n in ("alice", "bob", "carol"))


def event(position: int, thread: str | None = None) -> EventToPersist:
    data = {"type": "m.room.message", "sender": ALICE, "room_id": ROOM}
    pdu = Pdu(data, EventID(f"$e{position}"), ROOM_V12)
    rel_type = "m.thread" if thread is not None else None
    root = EventID(thread) if thread is not None else None
    return EventToPersist(pdu, position, 1, None, None, root, rel_type, ())


def service() -> PushActionsService:
    nothing: Any = None
    return PushActionsService(
        ServerName("example.org"), nothing, nothing, nothing, nothing, nothing, relations=nothing
    )


async def test_counted_is_the_room_row_plus_the_members_exception() -> None:
    push = service()
    redacted = dataclasses.replace(event(4), redacted_by=EventID("$r"))
    batch = [event(1), event(2), event(3, thread="$root"), redacted]
    writes = actions._Writes(
        [RoomNotification(ROOM, 1, EventID("$e1"), ALICE, "main", False)],
        [
            UserException(BOB, ROOM, 1, EventID("$e1"), ALICE, "main", 0, 1),  # mentioned
            UserException(CAROL, ROOM, 1, EventID("$e1"), ALICE, "main", -1, 0),  # muted
        ],
        {},
        [],
        {EventID("$e1"): "main", EventID("$e2"): "main", EventID("$e3"): "$root"},
    )

    async def evaluated(batch: Any) -> Any:
        return writes

    push._evaluate_batch = evaluated  # type: ignore[method-assign]
    await push.prepare(batch)
    assert push.counted(BOB, EventID("$e1")) == Counted(1, 1, "main")
    assert push.counted(CAROL, EventID("$e1")) == Counted(0, 0, "main")
    assert push.counted(ALICE, EventID("$e1")) == Counted(1, 0, "main")
    assert push.counted(BOB, EventID("$e2")) == Counted(0, 0, "main")  # evaluated, no rows
    assert push.counted(BOB, EventID("$e3")) == Counted(0, 0, "$root")  # a thread reply
    assert push.counted(BOB, EventID("$e4")) is None  # stored redacted: not told
    assert push.counted(BOB, EventID("$e5")) is None  # never evaluated

    async def failing(batch: Any) -> Any:
        raise RuntimeError("evaluation failed")

    push._evaluate_batch = failing  # type: ignore[method-assign]
    assert await push.prepare(batch) is None
    assert push.counted(BOB, EventID("$e1")) is None
