"""TypingService: typing sets, positions, wake-ups and expiry on an injected clock
(Client-Server API, "Typing Notifications")."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import pytest

import peyvand.services.sync.typing as typing_module
from harness.service_fakes import FakeRoom, RecordingNotifier
from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.streams import Stream
from peyvand.services.sync.typing import MAX_TIMEOUT_MS, TypingService
from peyvand.types import RoomID, UserID

ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")
ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
CAROL = UserID("@carol:localhost")
START_MS = 1_700_000_000_000


@dataclass
class FakeState:
    rooms: dict[RoomID, FakeRoom]

    async def get_room(self, room_id: RoomID) -> FakeRoom | None:
        return self.rooms.get(room_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def typing(clock: Clock, notifier: RecordingNotifier) -> TypingService:
    state = FakeState(
        {
            ROOM: FakeRoom({ALICE: "join", BOB: "join", CAROL: "leave"}),
            OTHER_ROOM: FakeRoom({ALICE: "join"}),
        }
    )
    # The wall clock stands still, so positions advance by exactly one per change.
    return TypingService(
        cast(Any, notifier), cast(Any, state), clock=clock, wall_clock_ms=lambda: START_MS
    )


def typing_users(service: TypingService, room_id: RoomID, since: int) -> list[str] | None:
    event = service.typing_for_rooms([room_id], since).get(room_id)
    if event is None:
        return None
    assert event["type"] == "m.typing"
    users: list[str] = event["content"]["user_ids"]
    return users


async def test_positions_start_at_the_wall_clock(typing: TypingService) -> None:
    assert typing.current_position == START_MS


async def test_start_and_stop_typing_change_the_room_and_wake_its_joined_members(
    typing: TypingService, notifier: RecordingNotifier
) -> None:
    start = typing.current_position
    await typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    assert typing.current_position == start + 1
    assert notifier.woken == [(Stream.TYPING, start + 1, {ALICE, BOB})]
    assert typing_users(typing, ROOM, start) == [ALICE]
    await typing.set_typing(BOB, BOB, ROOM, True, 10_000)
    assert typing_users(typing, ROOM, start) == [ALICE, BOB]

    await typing.set_typing(ALICE, ALICE, ROOM, False)
    assert typing.current_position == start + 3
    # The whole current set, which clients use to REPLACE theirs.
    assert typing_users(typing, ROOM, start + 2) == [BOB]
    await typing.set_typing(BOB, BOB, ROOM, False)
    assert typing_users(typing, ROOM, start + 3) == []
    # Nothing changed after the latest position, and other rooms never changed.
    assert typing.typing_for_rooms([ROOM, OTHER_ROOM], typing.current_position) == {}
    assert typing_users(typing, OTHER_ROOM, 0) is None


async def test_repeating_a_start_or_a_stop_changes_nothing(
    typing: TypingService, notifier: RecordingNotifier
) -> None:
    await typing.set_typing(ALICE, ALICE, ROOM, False)
    assert notifier.woken == []
    await typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    position = typing.current_position
    await typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    assert typing.current_position == position
    assert len(notifier.woken) == 1


async def test_typing_expires_after_its_timeout(
    typing: TypingService, clock: Clock, notifier: RecordingNotifier
) -> None:
    await typing.set_typing(ALICE, ALICE, ROOM, True, 5_000)
    position = typing.current_position
    clock.now += 4.9
    await typing.expire_due()
    assert typing.current_position == position
    clock.now += 0.2
    await typing.expire_due()
    assert typing.current_position == position + 1
    assert typing_users(typing, ROOM, position) == []
    assert notifier.woken[-1] == (Stream.TYPING, position + 1, {ALICE, BOB})


async def test_a_renewed_timeout_outlives_the_first_deadline(
    typing: TypingService, clock: Clock
) -> None:
    await typing.set_typing(ALICE, ALICE, ROOM, True, 5_000)
    clock.now += 4
    await typing.set_typing(ALICE, ALICE, ROOM, True, 5_000)
    clock.now += 2
    await typing.expire_due()
    assert typing_users(typing, ROOM, 0) == [ALICE]
    clock.now += 4
    await typing.expire_due()
    assert typing_users(typing, ROOM, 0) == []


async def test_timeouts_are_capped(typing: TypingService, clock: Clock) -> None:
    await typing.set_typing(ALICE, ALICE, ROOM, True, 3_600_000)
    clock.now += MAX_TIMEOUT_MS / 1000 + 0.1
    await typing.expire_due()
    assert typing_users(typing, ROOM, 0) == []


async def test_positions_never_fall_behind_the_wall_clock(clock: Clock) -> None:
    wall = [START_MS]
    state = FakeState({ROOM: FakeRoom({ALICE: "join"})})
    service = TypingService(
        cast(Any, RecordingNotifier()), cast(Any, state), clock=clock, wall_clock_ms=lambda: wall[0]
    )
    wall[0] = START_MS + 500
    await service.set_typing(ALICE, ALICE, ROOM, True, 1_000)
    assert service.current_position == START_MS + 500


@pytest.mark.parametrize(
    ("requester", "target", "room_id"),
    [
        pytest.param(BOB, ALICE, ROOM, id="someone-else"),
        pytest.param(CAROL, CAROL, ROOM, id="left-the-room"),
        pytest.param(BOB, BOB, OTHER_ROOM, id="never-joined"),
        pytest.param(ALICE, ALICE, RoomID("!unknown:localhost"), id="unknown-room"),
    ],
)
async def test_only_joined_members_set_their_own_typing(
    typing: TypingService, requester: UserID, target: UserID, room_id: RoomID
) -> None:
    with pytest.raises(MatrixError) as info:
        await typing.set_typing(requester, target, room_id, True, 1_000)
    assert info.value.errcode == Errcode.FORBIDDEN
    assert info.value.status == 403


async def test_the_expiry_task_expires_typing_until_stopped(
    typing: TypingService,
    clock: Clock,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(typing_module, "EXPIRY_TICK_SECONDS", 0.01)
    await typing.start()
    try:
        assert notifier.woken == [(Stream.TYPING, START_MS, set())]
        await typing.set_typing(ALICE, ALICE, ROOM, True, 1_000)
        notifier.advanced.clear()
        clock.now += 2
        await asyncio.wait_for(notifier.advanced.wait(), 5)
    finally:
        await typing.stop()
    assert typing_users(typing, ROOM, 0) == []
