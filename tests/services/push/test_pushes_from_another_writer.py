"""The pusher pool with several event writers (issue 21): another writer's events, whose
push rules that writer evaluated, are read from the database by the pushers of the users
in their rooms; this writer's later pushes wait until that is done, so a pusher never
sends a later notification first and then skips the earlier one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from peyvand.events.pdu import Pdu
from peyvand.events.push_rules.actions import Actions
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.push.actions import PushOutcome
from peyvand.services.push.delivery.pool import PusherPool, UsersWithPushers
from peyvand.services.push.delivery.pusher import LivePush
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, UserID

BOB = UserID("@bob:test")
ROOM = RoomID("!room:test")


def event(position: int) -> EventToPersist:
    pdu = Pdu({"type": "m.room.message", "room_id": ROOM}, EventID(f"$e{position}"),
              KNOWN_ROOM_VERSIONS["11"])  # fmt: skip
    return EventToPersist(pdu, position, 1, None, None, None, None, ())


class Pusher:
    """Records what the pool hands bob's pusher, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.called = asyncio.Event()

    def on_push(self, push: LivePush) -> None:
        self.calls.append(f"live {push.stream_ordering}")
        self.called.set()

    def read_to(self, position: int) -> None:
        self.calls.append(f"read to {position}")
        self.called.set()


class Notifications:
    """The rooms' members, answered once ``answer`` is set."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.asked = asyncio.Event()

    async def users_with_events(self, users: Any, after: int, up_to: int) -> set[UserID]:
        self.asked.set()
        await self.answer.wait()
        return {BOB}


async def test_a_later_push_of_this_writer_waits_for_the_other_writers_read() -> None:
    notifications = Notifications()
    outcomes = {p: PushOutcome(event(p), {BOB: Actions(notify=True)}) for p in (104, 106)}
    pool = PusherPool(
        cast(Any, SimpleNamespace(set_delivered=None, set_failing_since=None)),
        cast(Any, notifications),
        cast(Any, SimpleNamespace(notify=None)),
        cast(Any, None),
        UsersWithPushers(),
        take_pushes=lambda events: [outcomes[e.stream_ordering] for e in events
                                    if e.stream_ordering in outcomes],
        actions_now=cast(Any, None), remote_invite_actions=cast(Any, None),
        memberships=cast(Any, None), unread_counts=cast(Any, None),
        ignored_users=cast(Any, None), max_position=cast(Any, None),
        max_concurrent_sends=4, include_content=True,
        elsewhere=lambda position: position % 2 == 1,
    )  # fmt: skip
    pusher = Pusher()
    pool._pushers[BOB] = {("app", "key"): cast(Any, pusher)}
    pool._started = True
    pool._elsewhere_task.start()
    try:
        pool.on_persisted([event(103)])  # the other writer's
        async with asyncio.timeout(5):
            await notifications.asked.wait()
        pool.on_persisted([event(104)])  # this writer's, notifying bob
        await asyncio.sleep(0.05)
        assert pusher.calls == []
        notifications.answer.set()
        async with asyncio.timeout(5):
            while len(pusher.calls) < 2:
                pusher.called.clear()
                await pusher.called.wait()
        assert pusher.calls == ["read to 103", "live 104"]
        pool.on_persisted([event(106)])  # nothing behind: handed at once
        assert pusher.calls[-1] == "live 106"
    finally:
        await pool._elsewhere_task.stop()
