"""One ``HttpPusher`` in process with fake dependencies, for what HTTP cannot time: the
order of catch-up and live notifications, giving up after a day of failures, a
``rejected`` pushkey, and the stored position moving only after a 200."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from harness.pusher_deps import fake_pusher_deps
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.federation.push_gateway import GatewayAnswer, GatewayError
from peyvand.services.push.delivery.pusher import (
    GIVE_UP_AFTER_MS,
    HttpPusher,
    LivePush,
    PusherDeps,
)
from peyvand.storage.notifications import Notification
from peyvand.storage.pushers import DeliveryState, PusherRow
from peyvand.types import EventID, JsonDict, RoomID, UserID

USER = UserID("@bob:test")
ROOM = RoomID("!room:test")
URL = "https://push.example/_matrix/push/v1/notify"
NOW = 10**12


def pdu(n: int) -> Pdu:
    data = {"type": "m.room.message", "room_id": ROOM, "sender": "@alice:test", "content": {}}
    return Pdu(data, EventID(f"$e{n}"), KNOWN_ROOM_VERSIONS["11"])


class Fakes:
    """The pool's side: a gateway that answers as told, the store, the database rows."""

    def __init__(self, stored: Sequence[int] = ()) -> None:
        self.sent: list[str] = []
        self.answers: list[str] = []
        self.positions: list[int] = []
        self.removed = False
        self.failing_since: int | None = None
        self.stored = list(stored)
        self.done = asyncio.Event()

    async def notify(self, url: str, notification: JsonDict) -> GatewayAnswer:
        event_id = notification.get("event_id", "counts")
        answer = self.answers.pop(0) if self.answers else "ok"
        self.sent.append(f"{event_id}:{answer}")
        if answer == "fail":
            raise GatewayError("HTTP 500")
        return GatewayAnswer(("key",) if answer == "reject" else ())

    async def pending(
        self, user_id: UserID, after: int, up_to: int, limit: int
    ) -> tuple[list[Notification], int]:
        found = [n for n in self.stored if after < n <= up_to][:limit]
        notifications = [Notification(ROOM, n, EventID(f"$e{n}"), "main", False, 0) for n in found]
        return notifications, found[-1] if len(found) == limit else up_to

    async def get_pdus(self, event_ids: Sequence[EventID]) -> Mapping[EventID, Pdu]:
        return {e: pdu(int(e[2:])) for e in event_ids}

    async def set_delivered(self, row: PusherRow, position: int, ts: int | None) -> bool:
        self.positions.append(position)
        self.done.set()
        return True

    async def set_failing_since(self, row: PusherRow, since: int) -> None:
        self.failing_since = since

    async def remove(self, row: PusherRow) -> None:
        self.removed = True
        self.done.set()

    def deps(self) -> PusherDeps:
        return fake_pusher_deps(
            notify=self.notify,
            pending=self.pending,
            get_pdus=self.get_pdus,
            set_delivered=self.set_delivered,
            set_failing_since=self.set_failing_since,
            remove=self.remove,
            now_ms=lambda: NOW,
        )


def state(position: int, failing_since: int | None = None) -> DeliveryState:
    data: dict[str, Any] = {"url": URL}
    row = PusherRow(USER, "app", "key", None, "http", "App", "Phone", None, "en", data, NOW)
    return DeliveryState(row, position, failing_since)


async def settle(fakes: Fakes, pusher: HttpPusher, until: int) -> None:
    """Run until the pusher stored ``until`` (or was removed), at most 5 s."""
    async with asyncio.timeout(5):
        while until not in fakes.positions and not fakes.removed:
            fakes.done.clear()
            await fakes.done.wait()
    await pusher.stop()


async def test_catch_up_comes_first_and_live_pushes_it_covers_are_dropped() -> None:
    fakes = Fakes(stored=[3, 5, 7])
    pusher = HttpPusher(state(4), catch_up_to=7, deps=fakes.deps())
    pusher.on_push(LivePush(7, pdu(7), {}))  # also in the database: dropped here
    pusher.on_push(LivePush(9, pdu(9), {"sound": "default"}))
    pusher.start()
    await settle(fakes, pusher, 9)
    assert fakes.sent == ["$e5:ok", "$e7:ok", "$e9:ok"]
    assert fakes.positions == [5, 7, 9]


async def test_a_failure_is_retried_and_the_position_waits_for_the_200() -> None:
    fakes = Fakes()
    fakes.answers = ["fail"]
    pusher = HttpPusher(state(0), catch_up_to=0, deps=fakes.deps())
    pusher.start()
    pusher.on_push(LivePush(2, pdu(2), {}))
    await settle(fakes, pusher, 2)
    assert fakes.sent == ["$e2:fail", "$e2:ok"]
    assert fakes.failing_since == NOW
    assert fakes.positions == [2]


async def test_failing_for_a_day_removes_the_pusher() -> None:
    fakes = Fakes()
    fakes.answers = ["fail"]
    pusher = HttpPusher(state(0, failing_since=NOW - GIVE_UP_AFTER_MS - 1), 0, fakes.deps())
    pusher.start()
    pusher.on_push(LivePush(2, pdu(2), {}))
    pusher.on_push(LivePush(3, pdu(3), {}))
    await settle(fakes, pusher, 2)
    assert fakes.removed
    assert fakes.sent == ["$e2:fail"] and fakes.positions == []


async def test_rejected_pushkey_removes_the_pusher() -> None:
    fakes = Fakes()
    fakes.answers = ["reject"]
    pusher = HttpPusher(state(0), catch_up_to=0, deps=fakes.deps())
    pusher.start()
    pusher.on_push(LivePush(2, pdu(2), {}))
    pusher.on_push(LivePush(3, pdu(3), {}))
    await settle(fakes, pusher, 2)
    assert fakes.removed
    assert fakes.sent == ["$e2:reject"] and fakes.positions == []


async def test_pushes_evaluated_by_another_writer_are_read_in_order_with_live_ones() -> None:
    """Several event writers (issue 21): 5 was committed by another writer, whose push
    rules found it, so this pusher reads it from the database (``read_to``), in position
    order with this writer's live pushes (4 before, 8 after), each sent once."""
    fakes = Fakes(stored=[4, 5, 8])
    pusher = HttpPusher(state(0), catch_up_to=0, deps=fakes.deps())
    pusher.on_push(LivePush(4, pdu(4), {}))
    pusher.read_to(5)
    pusher.on_push(LivePush(8, pdu(8), {}))
    pusher.start()
    await settle(fakes, pusher, 8)
    assert fakes.sent == ["$e4:ok", "$e5:ok", "$e8:ok"]
    assert fakes.positions == [4, 5, 8]
