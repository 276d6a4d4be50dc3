"""Typing and presence shared by the processes of a deployment (issue 21, "Streams across
processes"), on fakes: two services joined by an in-memory bus that behaves as
``PostgresBus`` (a process gets its own messages too, payloads limited to the bus's
size). A change reaches the other process with its data and is not sent again; its
position there is above every token that process gave out; timeouts fire in one process
only."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from harness.service_fakes import FakeRoom, RecordingNotifier
from peyvand.services.sync.presence import (
    CHANNEL as PRESENCE_CHANNEL,
)
from peyvand.services.sync.presence import (
    MAX_STATUS_MSG_LENGTH,
    SYNC_ONLINE_TIMEOUT_MS,
    PresenceService,
    UserPresence,
)
from peyvand.services.sync.streams import Stream
from peyvand.services.sync.typing import (
    CHANNEL as TYPING_CHANNEL,
)
from peyvand.services.sync.typing import (
    REPLICA_GRACE_SECONDS,
    TypingService,
)
from peyvand.storage.bus import Subscriber, encode
from peyvand.types import RoomID, ServerName, UserID

ROOM = RoomID("!room:localhost")
ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
START_MS = 1_700_000_000_000


@dataclass
class Hub:
    """The database's NOTIFY: every process listening on a channel gets every message."""

    listeners: list[tuple[str, Subscriber]] = field(default_factory=list)
    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # Processes whose messages are lost (their connection is down).
    cut: set[str] = field(default_factory=set)

    def bus(self, name: str) -> HubBus:
        return HubBus(self, name)

    def sent_by(self, name: str, channel: str) -> list[dict[str, Any]]:
        return [payload for sender, ch, payload in self.sent if sender == name and ch == channel]


class HubBus:
    def __init__(self, hub: Hub, name: str) -> None:
        self._hub = hub
        self._name = name

    def publish(self, channel: str, payload: Mapping[str, object]) -> None:
        body = encode(channel, payload)
        self._hub.sent.append((self._name, channel, orjson.loads(body)))
        if self._name in self._hub.cut:
            return
        loop = asyncio.get_running_loop()
        for listening, callback in self._hub.listeners:
            if listening == channel:
                loop.call_soon(callback, orjson.loads(body), self._name)

    def subscribe(self, channel: str, callback: Subscriber) -> None:
        self._hub.listeners.append((channel, callback))


@dataclass
class FakeWorld:
    rooms: dict[RoomID, FakeRoom]

    async def memberships(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        return {
            room_id: (room.memberships[user_id], 1)
            for room_id, room in self.rooms.items()
            if user_id in room.memberships
        }

    async def get_room(self, room_id: RoomID) -> FakeRoom | None:
        return self.rooms.get(room_id)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MsClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def settled() -> None:
    """Let the bus deliver and the services apply (a few turns of the loop)."""
    for _ in range(10):
        await asyncio.sleep(0)


def world() -> FakeWorld:
    return FakeWorld({ROOM: FakeRoom({ALICE: "join", BOB: "join"})})


@dataclass
class TypingProcess:
    service: TypingService
    notifier: RecordingNotifier
    clock: Clock
    told: list[tuple[RoomID, UserID, bool]]


def typing_process(hub: Hub, name: str, wall_ms: int) -> TypingProcess:
    notifier, clock = RecordingNotifier(), Clock(1000.0)
    service = TypingService(
        cast(Any, notifier), cast(Any, world()), clock=clock, wall_clock_ms=lambda: wall_ms
    )
    service.replicate(cast(Any, hub.bus(name)), name)
    told: list[tuple[RoomID, UserID, bool]] = []

    async def listener(room_id: RoomID, user_id: UserID, typing: bool) -> None:
        told.append((room_id, user_id, typing))

    service.listeners.append(listener)
    return TypingProcess(service, notifier, clock, told)


def typing_users(process: TypingProcess, since: int) -> list[str] | None:
    event = process.service.typing_for_rooms([ROOM], since).get(ROOM)
    return None if event is None else list(event["content"]["user_ids"])


async def test_typing_reaches_the_other_process_once_and_at_a_later_position() -> None:
    hub = Hub()
    # The reader's clock is ahead of the writer's: its tokens are past the writer's
    # positions, and what it applies must still come after them.
    writer = typing_process(hub, "writer", START_MS)
    reader = typing_process(hub, "reader", START_MS + 5_000)
    token = reader.service.current_position

    await writer.service.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    await settled()
    assert typing_users(reader, token) == [ALICE]
    applied_at = reader.service.current_position
    assert applied_at == token + 1
    assert reader.notifier.woken[-1] == (Stream.TYPING, applied_at, {ALICE, BOB})
    assert reader.told == []  # told to other servers where it was made only
    assert writer.told == [(ROOM, ALICE, True)]
    assert hub.sent_by("reader", TYPING_CHANNEL) == []  # applied, not sent again

    # The writer's clock ahead: the reader takes the writer's position.
    writer_ahead = typing_process(hub, "writer2", START_MS + 60_000)
    await writer_ahead.service.set_typing(BOB, BOB, ROOM, True, 10_000)
    await settled()
    assert reader.service.current_position == writer_ahead.service.current_position
    assert typing_users(reader, applied_at) == [ALICE, BOB]

    await writer.service.set_typing(ALICE, ALICE, ROOM, False)
    await settled()
    assert typing_users(reader, 0) == [BOB]
    assert hub.sent_by("reader", TYPING_CHANNEL) == []


async def test_typing_expires_where_it_was_made_and_late_elsewhere() -> None:
    hub = Hub()
    writer = typing_process(hub, "writer", START_MS)
    reader = typing_process(hub, "reader", START_MS)
    await writer.service.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    await settled()

    # Past the deadline the reader waits for the writer's stop.
    reader.clock.now += 10.5
    await reader.service.expire_due()
    assert typing_users(reader, 0) == [ALICE]
    writer.clock.now += 10.5
    await writer.service.expire_due()
    await settled()
    assert typing_users(reader, 0) == []
    assert writer.told[-1] == (ROOM, ALICE, False)
    assert reader.told == []

    # The writer's stop lost: the reader drops alice after the grace, telling no one.
    await writer.service.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    await settled()
    hub.cut.add("writer")
    await writer.service.set_typing(ALICE, ALICE, ROOM, False)
    await settled()
    assert typing_users(reader, 0) == [ALICE]
    reader.clock.now += 10 + REPLICA_GRACE_SECONDS + 0.1
    position = reader.service.current_position
    await reader.service.expire_due()
    assert typing_users(reader, position) == []
    assert reader.told == []
    assert hub.sent_by("reader", TYPING_CHANNEL) == []


async def test_a_repeated_start_moves_the_other_process_deadline() -> None:
    hub = Hub()
    writer = typing_process(hub, "writer", START_MS)
    reader = typing_process(hub, "reader", START_MS)
    await writer.service.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    await settled()
    writer.clock.now += 9
    reader.clock.now += 9
    await writer.service.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    await settled()
    reader.clock.now += 10
    await reader.service.expire_due()
    assert typing_users(reader, 0) == [ALICE]


@dataclass
class PresenceProcess:
    service: PresenceService
    notifier: RecordingNotifier
    clock: MsClock
    told: list[list[UserID]]


def presence_process(hub: Hub, name: str, wall_ms: int) -> PresenceProcess:
    notifier, clock, rooms = RecordingNotifier(), MsClock(wall_ms), world()
    service = PresenceService(
        ServerName("localhost"),
        cast(Any, rooms),
        cast(Any, rooms),
        cast(Any, notifier),
        wall_clock_ms=clock,
    )
    service.replicate(cast(Any, hub.bus(name)), name, tells_servers=name == "writer")
    told: list[list[UserID]] = []

    async def listener(entries: Any) -> None:
        told.append([entry.user_id for entry in entries])

    service.listeners.append(listener)
    return PresenceProcess(service, notifier, clock, told)


async def presence_of(process: PresenceProcess, user_id: UserID) -> dict[str, Any]:
    return await process.service.get_status(ALICE, user_id)


async def test_a_sync_on_the_reader_makes_the_user_online_everywhere() -> None:
    hub = Hub()
    writer = presence_process(hub, "writer", START_MS)
    reader = presence_process(hub, "reader", START_MS + 5_000)
    token = reader.service.current_position

    async with reader.service.syncing(BOB, "online"):
        await settled()
        assert (await presence_of(writer, BOB))["presence"] == "online"
        assert (await presence_of(writer, BOB))["currently_active"] is True
        assert [u for u, _ in writer.service.changed_since(0)] == [BOB]
        assert writer.notifier.woken[-1][2] == {ALICE, BOB}
        assert hub.sent_by("writer", PRESENCE_CHANNEL) == []
        # Other servers hear of it from the writer, the federation sender, only.
        assert reader.told == [] and writer.told == [[BOB]]

    # PUT /presence on the writer reaches the reader, past the tokens it gave out.
    await writer.service.set_status(BOB, BOB, "unavailable", "lunch")
    await settled()
    assert reader.service.current_position > token + 1
    assert [u for u, _ in reader.service.changed_since(token + 1)] == [BOB]
    got = await presence_of(reader, BOB)
    assert (got["presence"], got["status_msg"]) == ("unavailable", "lunch")


async def test_only_the_user_owner_applies_the_timeouts() -> None:
    hub = Hub()
    writer = presence_process(hub, "writer", START_MS)
    reader = presence_process(hub, "reader", START_MS)
    async with reader.service.syncing(BOB, "online"):
        await settled()
        # The writer, where bob is not syncing, leaves him alone.
        writer.clock.now += SYNC_ONLINE_TIMEOUT_MS * 2
        await writer.service.sweep()
        assert (await presence_of(writer, BOB))["presence"] == "online"
    # The reader, where his sync ended, times him out; the writer hears it.
    reader.clock.now += SYNC_ONLINE_TIMEOUT_MS + 1
    await reader.service.sweep()
    await settled()
    assert (await presence_of(writer, BOB))["presence"] == "offline"
    assert hub.sent_by("writer", PRESENCE_CHANNEL) == []
    assert writer.told == [[BOB], [BOB]] and reader.told == []


async def test_a_sync_where_another_process_made_the_last_change_claims_the_user() -> None:
    hub = Hub()
    writer = presence_process(hub, "writer", START_MS)
    reader = presence_process(hub, "reader", START_MS)
    await writer.service.set_status(BOB, BOB, "online", None)
    await settled()
    sent = len(hub.sent_by("reader", PRESENCE_CHANNEL))
    async with reader.service.syncing(BOB, "online"):
        await settled()
        # Nothing notable changed, yet the reader told the writer it has bob now.
        assert len(hub.sent_by("reader", PRESENCE_CHANNEL)) == sent + 1
        writer.clock.now += SYNC_ONLINE_TIMEOUT_MS * 2
        reader.clock.now += SYNC_ONLINE_TIMEOUT_MS * 2
        await writer.service.sweep()
        await reader.service.sweep()
        await settled()
        assert (await presence_of(writer, BOB))["presence"] == "online"
        # Bob's next sync on the reader, the owner, sends nothing.
        async with reader.service.syncing(BOB, "online"):
            pass
        assert len(hub.sent_by("reader", PRESENCE_CHANNEL)) == sent + 1


async def test_a_long_status_message_travels_in_pieces() -> None:
    hub = Hub()
    writer = presence_process(hub, "writer", START_MS)
    reader = presence_process(hub, "reader", START_MS)
    status = '\U0001f600"\\\x00' * (MAX_STATUS_MSG_LENGTH // 4)
    assert len(orjson.dumps(UserPresence(BOB, status_msg=status).shared())) > 7_900
    await writer.service.set_status(BOB, BOB, "online", status)
    await settled()
    assert len(hub.sent_by("writer", PRESENCE_CHANNEL)) > 1
    assert (await presence_of(reader, BOB))["status_msg"] == status
