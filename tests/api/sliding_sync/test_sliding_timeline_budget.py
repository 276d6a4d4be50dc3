"""One sliding-sync response carries at most ``sliding_sync.max_timeline_events``
timeline events over all its rooms (issue 18: a request may ask up to 1,000 events of
every room it lists). Rooms past the budget get a shorter, ``limited`` page of their
newest events, at least one; the next responses send them whole, each within its own
budget, as an ``unstable_expanded_timeline``, without waiting. On every backend, against
a server of the test's own with a budget of 5."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.client import Account, MatrixClient, new_session
from harness.rooms import say
from harness.server import HomeserverProcess, start_homeserver
from harness.sliding_sync import create_room, one_list, sliding, window

BUDGET = 5
ASKED = 4
LONG_POLL_MS = 30_000


@pytest.fixture
def budget_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HomeserverProcess]:
    options = {"sliding_sync.max_timeline_events": str(BUDGET)}
    server = start_homeserver(backend, request, tmp_path / "server", options=options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def budget_client(budget_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, budget_homeserver.base_url)


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"]["body"] for e in room["timeline"]]


async def test_rooms_past_the_budget_get_short_pages_then_the_rest(
    budget_client: MatrixClient,
) -> None:
    client = budget_client
    alice: Account = await client.register()
    rooms: list[str] = []
    for index in range(3):
        room_id = await create_room(client, alice)
        for n in range(ASKED):
            await say(client, room_id, alice, f"room {index} message {n}")
        rooms.append(room_id)
    newest_first = rooms[::-1]
    body = {"lists": one_list(end=2, timeline_limit=ASKED)}
    full = [f"message {n}" for n in range(ASKED)]

    first = await sliding(client, alice, body)
    assert window(first) == newest_first
    answered = first["rooms"]
    # The newest room spends 4 of the 5 events, the next gets the one left, the last
    # its floor of one: each its newest events, limited.
    assert [len(answered[r]["timeline"]) for r in newest_first] == [ASKED, 1, 1]
    assert all(answered[r]["limited"] is True for r in newest_first)
    assert bodies(answered[rooms[2]]) == [f"room 2 {m}" for m in full]
    assert bodies(answered[rooms[1]]) == [f"room 1 message {ASKED - 1}"]
    assert bodies(answered[rooms[0]]) == [f"room 0 message {ASKED - 1}"]

    # The rooms cut short are news: a long-poll answers them at once.
    started = time.monotonic()
    second = await sliding(client, alice, body, pos=first["pos"], timeout_ms=LONG_POLL_MS)
    assert time.monotonic() - started < LONG_POLL_MS / 1000 / 3
    answered = second["rooms"]
    assert set(answered) == {rooms[1], rooms[0]}
    assert bodies(answered[rooms[1]]) == [f"room 1 {m}" for m in full]
    assert answered[rooms[1]]["unstable_expanded_timeline"] is True
    assert bodies(answered[rooms[0]]) == [f"room 0 message {ASKED - 1}"]

    third = await sliding(client, alice, body, pos=second["pos"])
    answered = third["rooms"]
    assert set(answered) == {rooms[0]}
    assert bodies(answered[rooms[0]]) == [f"room 0 {m}" for m in full]
    assert answered[rooms[0]]["unstable_expanded_timeline"] is True

    # Every room now holds its whole page: nothing more to send.
    fourth = await sliding(client, alice, body, pos=third["pos"])
    assert fourth["rooms"] == {}
