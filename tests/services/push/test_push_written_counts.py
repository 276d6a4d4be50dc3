"""PushActionsService.counted: what each committed event's rows add to a member's unread
counts (its room row, plus the member's exception), as ``prepare`` wrote them; nothing
when the evaluation failed, even if an earlier try of the same commit remembered it
(issue 18: sliding sync brings kept counts up to date from it)."""

from __future__ import annotations

from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.push import actions
from peyvand.services.push.actions import PushActionsService
from peyvand.storage.models import EventToPersist
from peyvand.storage.push_actions import RoomNotification, UserException
from peyvand.types import EventID, RoomID, ServerName, UserID

ROOM = RoomID("!room:example.org")
ALICE, BOB, CAROL = (UserID(f"@{n}:example.org") for n in ("alice", "bob", "carol"))


def event(position: int) -> EventToPersist:
    data = {"type": "m.room.message", "sender": ALICE, "room_id": ROOM}
    pdu = Pdu(data, EventID(f"$e{position}"), ROOM_V12)
    return EventToPersist(pdu, position, 1, None, None, None, None, ())


def service() -> PushActionsService:
    nothing: Any = None
    return PushActionsService(
        ServerName("example.org"), nothing, nothing, nothing, nothing, nothing
    )


async def test_counted_is_the_room_row_plus_the_members_exception() -> None:
    push = service()
    batch = [event(1), event(2)]
    writes = actions._Writes(
        [RoomNotification(ROOM, 1, EventID("$e1"), ALICE, "main", False)],
        [
            UserException(BOB, ROOM, 1, EventID("$e1"), ALICE, "main", 0, 1),  # mentioned
            UserException(CAROL, ROOM, 1, EventID("$e1"), ALICE, "main", -1, 0),  # muted
        ],
        {},
        [],
    )

    async def evaluated(batch: Any) -> Any:
        return writes

    push._evaluate_batch = evaluated  # type: ignore[method-assign]
    await push.prepare(batch)
    assert push.counted(BOB, EventID("$e1")) == (1, 1)
    assert push.counted(CAROL, EventID("$e1")) == (0, 0)
    assert push.counted(ALICE, EventID("$e1")) == (1, 0)
    assert push.counted(BOB, EventID("$e2")) == (0, 0)  # evaluated, no rows
    assert push.counted(BOB, EventID("$e3")) is None  # never evaluated

    async def failing(batch: Any) -> Any:
        raise RuntimeError("evaluation failed")

    push._evaluate_batch = failing  # type: ignore[method-assign]
    assert await push.prepare(batch) is None
    assert push.counted(BOB, EventID("$e1")) is None
