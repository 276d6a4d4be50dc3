"""A receipt in a room of more local members than a stream message names
(``stream_relay.MAX_USERS``) carries the room: the receiving process wakes the room's
members as its own snapshot keeps them, not every waiting sync (issue 21)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.stream_relay import MAX_USERS, StreamRelay
from peyvand.services.sync.streams import Stream, StreamToken
from peyvand.storage.bus import ReconnectHook, SendLostHook, Subscriber

ROOM = "!big:example.org"
MEMBERS = frozenset(f"@member{n}:example.org" for n in range(MAX_USERS + 6))
MEMBER = "@member3:example.org"
OUTSIDER = "@outsider:example.org"


class CaptureBus:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.subscribers: list[Subscriber] = []

    def publish(self, channel: str, payload: Mapping[str, object]) -> None:
        self.published.append(dict(payload))

    def subscribe(self, channel: str, callback: Subscriber) -> None:
        self.subscribers.append(callback)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        pass

    def on_send_lost(self, hook: SendLostHook) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def _members(room_id: str) -> AbstractSet[str] | None:
    return MEMBERS if room_id == ROOM else None


async def test_a_receipt_in_a_big_room_names_the_room() -> None:
    notifier = Notifier(StreamToken())
    bus = CaptureBus()
    relay = StreamRelay(bus, notifier, "writer", reread_seconds=3600)
    await relay.start()
    try:
        relay.in_room(Stream.RECEIPTS, 1, ROOM)
        notifier.advance(Stream.RECEIPTS, 1, (), [MEMBERS])
        notifier.advance(Stream.RECEIPTS, 2, (), [MEMBERS])  # not said: no room
    finally:
        await relay.stop()
    assert bus.published == [
        {"s": "receipts", "p": 1, "u": None, "r": ROOM},
        {"s": "receipts", "p": 2, "u": None},
    ]


async def test_the_receiver_wakes_the_room_members_only() -> None:
    notifier = Notifier(StreamToken())
    bus = CaptureBus()
    relay = StreamRelay(bus, notifier, "reader", reread_seconds=3600)
    relay.room_members(Stream.RECEIPTS, _members)
    await relay.start()
    member = asyncio.ensure_future(notifier.wait_for_user(MEMBER, 5.0))
    outsider = asyncio.ensure_future(notifier.wait_for_user(OUTSIDER, 5.0))
    try:
        await asyncio.sleep(0)
        for callback in bus.subscribers:
            callback({"s": "receipts", "p": 1, "u": None, "r": ROOM}, "writer")
        await asyncio.wait_for(member, 1.0)
        await asyncio.sleep(0.05)
        assert not outsider.done()
        assert notifier.current_token.get(Stream.RECEIPTS) == 1
        # A room this process keeps no copy of: everyone wakes.
        for callback in bus.subscribers:
            callback({"s": "receipts", "p": 2, "u": None, "r": "!other:example.org"}, "writer")
        await asyncio.wait_for(outsider, 1.0)
    finally:
        outsider.cancel()
        member.cancel()
        await relay.stop()
