"""A state PUT repeating a *redacted* current state event (Client-Server API, PUT
/rooms/{roomId}/state/{eventType}/{stateKey}), on every backend.

State identical to the current state is not sent again (tests/api/
test_identical_state_at_once.py), but once a moderator has redacted the room's topic,
clients see an empty topic: putting the same topic again is a change for them, so it
sends a new event that becomes the current state, not the redacted one handed back.
"""

from __future__ import annotations

from urllib.parse import quote

from harness.client import MatrixClient
from harness.rooms import create_room


async def test_same_topic_after_its_redaction_is_sent_again(client: MatrixClient) -> None:
    alice, moderator = await client.register(), await client.register()
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        power_level_content_override={"users": {moderator.user_id: 50}},
    )
    room = quote(room_id)
    (await client.request("POST", f"join/{room}", json={}, token=moderator)).ok()
    topic_path = f"rooms/{room}/state/m.room.topic/"

    async def put_topic() -> str:
        response = await client.request("PUT", topic_path, json={"topic": "t"}, token=alice)
        event_id: str = response.ok()["event_id"]
        return event_id

    first = await put_topic()
    # Unredacted, the same topic again is the same event: nothing is sent.
    assert await put_topic() == first
    redaction = await client.request(
        "PUT", f"rooms/{room}/redact/{quote(first)}/r1", json={}, token=moderator
    )
    redaction.ok()
    assert (await client.request("GET", topic_path, token=alice)).ok() == {}

    second = await put_topic()
    assert second != first
    assert (await client.request("GET", topic_path, token=alice)).ok() == {"topic": "t"}
    state = (await client.request("GET", f"rooms/{room}/state", token=alice)).ok()
    assert [e["event_id"] for e in state if e["type"] == "m.room.topic"] == [second]
    page = await client.request(
        "GET", f"rooms/{room}/messages", token=alice, params={"dir": "b", "limit": "100"}
    )
    topics = [e for e in page.ok()["chunk"] if e["type"] == "m.room.topic"]
    assert [(e["event_id"], e["content"]) for e in topics] == [
        (second, {"topic": "t"}),
        (first, {}),
    ]
    # And the new, unredacted topic is again not repeated.
    assert await put_topic() == second
