"""One sliding-sync response carries at most ``sliding_sync.max_timeline_events``
timeline events over all its rooms (issue 18: a request may ask up to 1,000 events of
every room it lists). Rooms past the budget get a shorter, ``limited`` page of their
newest events, at least one; later responses send them whole, each within its own
budget, as an ``unstable_expanded_timeline``, and their new events while they wait. A
room sent before spends only its new events. On every backend, against a server of the
test's own with a budget of 5."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from harness.client import Account, MatrixClient, new_session
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.sliding_sync import create_room, one_list, sliding, window

ConfiguredHomeserver = Callable[..., HomeserverProcess]

BUDGET = 5
ASKED = 4
LONG_POLL_MS = 30_000
BODY = {"lists": one_list(end=2, timeline_limit=ASKED)}
FULL = [f"message {n}" for n in range(ASKED)]


@pytest.fixture
async def budget_client(
    configured_homeserver: ConfiguredHomeserver,
) -> AsyncIterator[MatrixClient]:
    server = configured_homeserver(
        open_registration=True, options={"sliding_sync.max_timeline_events": str(BUDGET)}
    )
    async with new_session() as session:
        yield MatrixClient(session, server.base_url)


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"]["body"] for e in room["timeline"]]


async def three_rooms(client: MatrixClient, alice: Account) -> list[str]:
    """Three rooms of ``ASKED`` messages each, oldest first."""
    rooms: list[str] = []
    for index in range(3):
        room_id = await create_room(client, alice)
        for n in range(ASKED):
            await say(client, room_id, alice, f"room {index} message {n}")
        rooms.append(room_id)
    return rooms


async def first_response(client: MatrixClient, alice: Account, rooms: list[str]) -> str:
    """The first response: the newest room spends 4 of the 5 events, the next gets the
    one left, the last its floor of one; each its newest events, limited. Its pos."""
    first = await sliding(client, alice, BODY)
    newest_first = rooms[::-1]
    assert window(first) == newest_first
    answered = first["rooms"]
    assert [len(answered[r]["timeline"]) for r in newest_first] == [ASKED, 1, 1]
    assert all(answered[r]["limited"] is True for r in newest_first)
    assert bodies(answered[rooms[2]]) == [f"room 2 {m}" for m in FULL]
    assert bodies(answered[rooms[1]]) == [f"room 1 message {ASKED - 1}"]
    assert bodies(answered[rooms[0]]) == [f"room 0 message {ASKED - 1}"]
    pos: str = first["pos"]
    return pos


@dataclass(frozen=True)
class Cut:
    """Three rooms of ``ASKED`` messages (oldest first) after the first response."""

    client: MatrixClient
    alice: Account
    rooms: list[str]
    pos: str


@pytest.fixture
async def cut(budget_client: MatrixClient) -> Cut:
    alice = await budget_client.register()
    rooms = await three_rooms(budget_client, alice)
    return Cut(budget_client, alice, rooms, await first_response(budget_client, alice, rooms))


async def oldest_room_then_nothing(
    client: MatrixClient, alice: Account, rooms: list[str], pos: str
) -> None:
    """The oldest room, cut in the first response, gets its whole page; then every room
    holds its page and there is nothing more to send."""
    answered = await sliding(client, alice, BODY, pos=pos)
    assert set(answered["rooms"]) == {rooms[0]}
    room = answered["rooms"][rooms[0]]
    assert bodies(room) == [f"room 0 {m}" for m in FULL]
    assert room["unstable_expanded_timeline"] is True
    last = await sliding(client, alice, BODY, pos=answered["pos"])
    assert last["rooms"] == {}


async def test_rooms_past_the_budget_get_short_pages_then_the_rest(
    cut: Cut,
) -> None:
    client, alice, rooms, pos = cut.client, cut.alice, cut.rooms, cut.pos

    # A room cut short is news: a long-poll answers at once. The middle room now gets
    # its whole page; the oldest, cut to the one event it holds, waits.
    started = time.monotonic()
    second = await sliding(client, alice, BODY, pos=pos, timeout_ms=LONG_POLL_MS)
    assert time.monotonic() - started < LONG_POLL_MS / 1000 / 3
    answered = second["rooms"]
    assert set(answered) == {rooms[1]}
    assert bodies(answered[rooms[1]]) == [f"room 1 {m}" for m in FULL]
    assert answered[rooms[1]]["unstable_expanded_timeline"] is True

    await oldest_room_then_nothing(client, alice, rooms, second["pos"])


async def test_a_room_waiting_for_its_page_gets_its_new_events_meanwhile(
    cut: Cut,
) -> None:
    client, alice, rooms, pos = cut.client, cut.alice, cut.rooms, cut.pos
    await say(client, rooms[1], alice, "room 1 late 0")
    await say(client, rooms[1], alice, "room 1 late 1")
    late = [f"room 2 late {n}" for n in range(ASKED)]
    for text in late:
        await say(client, rooms[2], alice, text)

    # The newest room's 4 new events spend 4 of the budget: the middle room, cut to
    # one event again, gets its newest one, a gap before it; the oldest has nothing
    # new to wait with.
    second = await sliding(client, alice, BODY, pos=pos)
    answered = second["rooms"]
    assert set(answered) == {rooms[2], rooms[1]}
    assert bodies(answered[rooms[2]]) == late
    assert answered[rooms[2]]["limited"] is False
    assert bodies(answered[rooms[1]]) == ["room 1 late 1"]
    assert answered[rooms[1]]["limited"] is True
    assert "unstable_expanded_timeline" not in answered[rooms[1]]

    # The middle room's page, whole; the oldest, cut to its one event, waits again.
    third = await sliding(client, alice, BODY, pos=second["pos"])
    answered = third["rooms"]
    assert set(answered) == {rooms[1]}
    assert bodies(answered[rooms[1]]) == [
        "room 1 message 2",
        "room 1 message 3",
        "room 1 late 0",
        "room 1 late 1",
    ]
    assert answered[rooms[1]]["unstable_expanded_timeline"] is True
    await oldest_room_then_nothing(client, alice, rooms, third["pos"])


async def test_a_room_sent_before_spends_only_its_new_events(
    cut: Cut,
) -> None:
    client, alice, rooms, pos = cut.client, cut.alice, cut.rooms, cut.pos
    await say(client, rooms[2], alice, "room 2 late")

    # The newest room's one new event spends one, not the 4 it asks: the middle room
    # gets its whole page at once.
    second = await sliding(client, alice, BODY, pos=pos)
    answered = second["rooms"]
    assert set(answered) == {rooms[2], rooms[1]}
    assert bodies(answered[rooms[2]]) == ["room 2 late"]
    assert bodies(answered[rooms[1]]) == [f"room 1 {m}" for m in FULL]
    assert answered[rooms[1]]["unstable_expanded_timeline"] is True
