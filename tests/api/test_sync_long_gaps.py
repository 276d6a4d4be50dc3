"""A gappy /sync whose token is older than the events the server holds in memory for a
busy room (``services/sync/recent_events.py``): the state section still tells exactly
what changed across the gap, and the timeline is the newest events (Client-Server API,
"Syncing"; issue 15, "hot room")."""

from __future__ import annotations

import json
from typing import Any

from harness.client import MatrixClient
from harness.rooms import say
from harness.sync import sync
from peyvand.services.sync.recent_events import EVENTS_PER_ROOM

LAZY = json.dumps({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}})
# Longer than what is held per room: the gap's start is read through the held state groups.
GAP = EVENTS_PER_ROOM + 8


def state_of(body: dict[str, Any], room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    events = body["rooms"]["join"][room_id]["state"]["events"]
    return {(e["type"], e["state_key"]): e["content"] for e in events}


async def test_a_long_gap_reports_the_state_changed_in_it_and_nothing_else(
    client: MatrixClient,
) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat", "name": "busy"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    initial = await sync(client, alice, filter=LAZY)

    topic = {"topic": "changed early in the gap"}
    path = f"rooms/{room_id}/state/m.room.topic"
    (await client.request("PUT", path, json=topic, token=alice)).ok()
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=carol)).ok()
    texts = [f"message {i}" for i in range(GAP)]
    for text in texts:
        await say(client, room_id, alice, text)
    gappy = await sync(client, alice, filter=LAZY, since=initial["next_batch"])
    timeline = gappy["rooms"]["join"][room_id]["timeline"]
    assert timeline["limited"] is True
    assert [e["content"]["body"] for e in timeline["events"]] == texts[-3:]
    # The topic and Carol's membership changed in the gap; Bob's member event is not
    # needed (he sent nothing) nor Alice's (sent to this device already).
    state = state_of(gappy, room_id)
    assert set(state) == {("m.room.topic", ""), ("m.room.member", carol.user_id)}
    assert state[("m.room.topic", "")] == topic
    assert state[("m.room.member", carol.user_id)]["membership"] == "join"

    for text in texts:
        await say(client, room_id, alice, text)
    quiet = await sync(client, alice, filter=LAZY, since=gappy["next_batch"])
    assert quiet["rooms"]["join"][room_id]["timeline"]["limited"] is True
    # Nothing changed across this gap, and Alice's own member was sent already.
    assert state_of(quiet, room_id) == {}
