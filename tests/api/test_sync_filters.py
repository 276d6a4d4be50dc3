"""/sync's filters over HTTP on every backend (Client-Server API, "Filtering"):
``account_data`` and ``room.account_data``, ``event_format`` and ``event_fields``, the
state filter of left rooms; and /messages forwards from a sync token."""

from __future__ import annotations

import json
from urllib.parse import quote

from harness.client import MatrixClient
from harness.rooms import say


async def test_account_data_filters_apply_to_sync(client: MatrixClient) -> None:
    alice = await client.register()
    room = await client.request("POST", "createRoom", json={}, token=alice)
    room_id = room.ok()["room_id"]
    user = quote(alice.user_id, safe="")
    for data_type in ("org.example.kept", "org.example.dropped"):
        body = {"type": data_type}
        path = f"user/{user}/account_data/{data_type}"
        (await client.request("PUT", path, json=body, token=alice)).ok()
        path = f"user/{user}/rooms/{room_id}/account_data/{data_type}"
        (await client.request("PUT", path, json=body, token=alice)).ok()
    only_kept = {"types": ["org.example.kept"]}
    sync_filter = json.dumps({"account_data": only_kept, "room": {"account_data": only_kept}})
    synced = (await client.request("GET", "sync", token=alice, params={"filter": sync_filter})).ok()
    assert [e["type"] for e in synced["account_data"]["events"]] == ["org.example.kept"]
    room_data = synced["rooms"]["join"][room_id]["account_data"]["events"]
    assert [e["type"] for e in room_data] == ["org.example.kept"]
    # Unfiltered, both arrive.
    everything = (await client.request("GET", "sync", token=alice)).ok()
    assert {"org.example.kept", "org.example.dropped"} <= {
        e["type"] for e in everything["account_data"]["events"]
    }


async def test_federation_format_and_event_fields(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    event_id = await say(client, room_id, alice, "as a PDU")
    federation = json.dumps({"event_format": "federation", "room": {"timeline": {"limit": 1}}})
    synced = (await client.request("GET", "sync", token=alice, params={"filter": federation})).ok()
    [event] = synced["rooms"]["join"][room_id]["timeline"]["events"]
    assert event["event_id"] == event_id and event["room_id"] == room_id
    assert {"prev_events", "auth_events", "depth", "hashes", "signatures"} <= set(event)
    fields = json.dumps(
        {"event_fields": ["type", "content.body"], "room": {"timeline": {"limit": 1}}}
    )
    synced = (await client.request("GET", "sync", token=alice, params={"filter": fields})).ok()
    assert synced["rooms"]["join"][room_id]["timeline"]["events"] == [
        {"type": "m.room.message", "content": {"body": "as a PDU"}}
    ]


async def test_left_room_state_follows_the_state_filter(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = (
        await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
    ).ok()["room_id"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    await say(client, room_id, alice, "before")
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    await say(client, room_id, alice, "after")
    only_topics = json.dumps(
        {
            "room": {
                "include_leave": True,
                "timeline": {"types": ["m.room.message"]},
                "state": {"types": ["m.room.topic"]},
            }
        }
    )
    synced = (await client.request("GET", "sync", token=bob, params={"filter": only_topics})).ok()
    left = synced["rooms"]["leave"][room_id]
    assert left["state"]["events"] == []
    assert [e["content"]["body"] for e in left["timeline"]["events"]] == ["before"]


async def test_forward_messages_from_a_sync_token_continue(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    next_batch = (await client.request("GET", "sync", token=alice)).ok()["next_batch"]
    first = await say(client, room_id, alice, "first")
    path = f"rooms/{room_id}/messages"
    page = (
        await client.request("GET", path, token=alice, params={"dir": "f", "from": next_batch})
    ).ok()
    assert [e["event_id"] for e in page["chunk"]] == [first]
    # "end" is there although nothing newer exists yet: newer events come from it.
    second = await say(client, room_id, alice, "second")
    page = (
        await client.request("GET", path, token=alice, params={"dir": "f", "from": page["end"]})
    ).ok()
    assert [e["event_id"] for e in page["chunk"]] == [second]
