"""The timeline of a room new to a connection is kept between requests
(``initial_timelines.py``); each fresh connection must still get it as it is now: after a
new message, a redaction, and ignoring or no longer ignoring the sender. On every
backend."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import say
from harness.sliding_sync import create_room, join, one_list, sliding


async def timeline(client: MatrixClient, account: Account, room_id: str) -> list[dict[str, Any]]:
    """The room's timeline in a new connection's answer (``limited`` checked)."""
    room = (await sliding(client, account, {"lists": one_list(timeline_limit=2)}))["rooms"]
    assert room[room_id]["limited"] is True
    events: list[dict[str, Any]] = room[room_id]["timeline"]
    return events


def bodies(events: list[dict[str, Any]]) -> list[object]:
    return [e["content"].get("body") for e in events]


async def test_a_kept_timeline_follows_new_messages_and_redactions(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await say(client, room_id, alice, "one")
    await say(client, room_id, alice, "two")
    assert bodies(await timeline(client, bob, room_id)) == ["one", "two"]
    assert bodies(await timeline(client, bob, room_id)) == ["one", "two"]  # kept
    three = await say(client, room_id, alice, "three")
    assert bodies(await timeline(client, bob, room_id)) == ["two", "three"]
    path = f"rooms/{quote(room_id)}/redact/{quote(three)}/redact-three"
    (await client.request("PUT", path, json={}, token=alice)).ok()
    events = await timeline(client, bob, room_id)
    assert [e["type"] for e in events] == ["m.room.message", "m.room.redaction"]
    assert events[0]["event_id"] == three and events[0]["content"] == {}


async def test_a_kept_timeline_follows_ignoring_the_sender(client: MatrixClient) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await join(client, carol, room_id)
    await say(client, room_id, carol, "from carol")
    await say(client, room_id, alice, "from alice")
    assert bodies(await timeline(client, bob, room_id)) == ["from carol", "from alice"]
    path = f"user/{quote(bob.user_id)}/account_data/m.ignored_user_list"
    ignoring: dict[str, Any] = {"ignored_users": {alice.user_id: {}}}
    (await client.request("PUT", path, json=ignoring, token=bob)).ok()
    assert "from alice" not in bodies(await timeline(client, bob, room_id))
    (await client.request("PUT", path, json={"ignored_users": {}}, token=bob)).ok()
    assert bodies(await timeline(client, bob, room_id)) == ["from carol", "from alice"]
