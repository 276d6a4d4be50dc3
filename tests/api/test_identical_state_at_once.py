"""Identical state PUT at the same time (Client-Server API, PUT
/rooms/{roomId}/state/{eventType}/{stateKey}): as in Synapse, state identical to the
current state is not sent again, and the check is made under the room's lock, so
simultaneous identical requests create one event and all get its ID."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import create_room

_AT_ONCE = 10


async def topic_events(client: MatrixClient, room_id: str, reader: Account) -> list[str]:
    page = await client.request(
        "GET",
        f"rooms/{quote(room_id)}/messages",
        token=reader,
        params={"dir": "b", "limit": "100"},
    )
    return [e["event_id"] for e in page.ok()["chunk"] if e["type"] == "m.room.topic"]


async def put_topics_at_once(
    client: MatrixClient, room_id: str, account: Account, topic: str
) -> set[str]:
    responses = await asyncio.gather(
        *(
            client.request(
                "PUT",
                f"rooms/{quote(room_id)}/state/m.room.topic/",
                json={"topic": topic},
                token=account,
            )
            for _ in range(_AT_ONCE)
        )
    )
    return {r.ok()["event_id"] for r in responses}


async def test_identical_state_put_at_once_creates_one_event(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice, preset="private_chat")
    assert await topic_events(client, room_id, alice) == []

    first = await put_topics_at_once(client, room_id, alice, "same")
    assert len(first) == 1
    assert await topic_events(client, room_id, alice) == list(first)

    # Over an existing, different topic: again one new event, then none.
    second = await put_topics_at_once(client, room_id, alice, "changed")
    assert len(second) == 1 and second != first
    assert await put_topics_at_once(client, room_id, alice, "changed") == second
    assert await topic_events(client, room_id, alice) == [*second, *first]
    state = await client.request("GET", f"rooms/{quote(room_id)}/state/m.room.topic/", token=alice)
    assert state.ok() == {"topic": "changed"}
