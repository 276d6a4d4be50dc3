"""The deprecated reads before /sync and reads of world-readable rooms by non-members,
over HTTP on every backend (Client-Server API: old_sync.yaml, room_initial_sync.yaml,
peeking_events.yaml; "Room History Visibility")."""

from __future__ import annotations

from harness.client import Account, MatrixClient
from harness.rooms import create_room, say
from harness.sync import LongPoll


async def set_visibility(client: MatrixClient, room_id: str, account: Account, value: str) -> str:
    response = await client.request(
        "PUT",
        f"rooms/{room_id}/state/m.room.history_visibility",
        json={"history_visibility": value},
        token=account,
    )
    event_id: str = response.ok()["event_id"]
    return event_id


async def test_global_initial_sync(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice, visibility="public", name="old style")
    message = await say(client, room_id, alice, "hello")
    body = (await client.request("GET", "initialSync", token=alice)).ok()
    room = next(r for r in body["rooms"] if r["room_id"] == room_id)
    assert room["membership"] == "join" and room["visibility"] == "public"
    assert message in [e["event_id"] for e in room["messages"]["chunk"]]
    assert ("m.room.name", "") in {(e["type"], e["state_key"]) for e in room["state"]}
    assert isinstance(body["end"], str)
    # Account data as stored (push rules have their own API).
    assert "m.push_rules" not in [e["type"] for e in body["account_data"]]
    empty = (await client.request("GET", "initialSync", token=alice, params={"limit": "0"})).ok()
    room = next(r for r in empty["rooms"] if r["room_id"] == room_id)
    assert room["messages"]["chunk"] == []
    bad = await client.request("GET", "initialSync", token=alice, params={"limit": "many"})
    assert bad.status == 400 and bad.body["errcode"] == "M_INVALID_PARAM"


async def test_room_initial_sync_for_members_and_world_readable_readers(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await say(client, room_id, alice, "private")
    own = (await client.request("GET", f"rooms/{room_id}/initialSync", token=alice)).ok()
    assert own["membership"] == "join"
    assert "private" in [e["content"].get("body") for e in own["messages"]["chunk"]]
    refused = await client.request("GET", f"rooms/{room_id}/initialSync", token=bob)
    assert refused.status == 403

    visibility = await set_visibility(client, room_id, alice, "world_readable")
    public = await say(client, room_id, alice, "public")
    peek = (await client.request("GET", f"rooms/{room_id}/initialSync", token=bob)).ok()
    # Only what was sent while world-readable.
    assert [e["event_id"] for e in peek["messages"]["chunk"]] == [visibility, public]
    assert "m.room.create" in {e["type"] for e in peek["state"]}
    assert "membership" not in peek


async def test_non_members_read_world_readable_rooms_only(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    shared = await create_room(client, alice, preset="public_chat")
    readable = await create_room(client, alice, preset="public_chat")
    await set_visibility(client, readable, alice, "world_readable")
    message = await say(client, readable, alice, "anyone may read this")
    for path in ("messages", "state", "state/m.room.create/", "members"):
        assert (await client.request("GET", f"rooms/{shared}/{path}", token=bob)).status == 403
        (await client.request("GET", f"rooms/{readable}/{path}", token=bob)).ok()
    page = (
        await client.request("GET", f"rooms/{readable}/messages", token=bob, params={"dir": "b"})
    ).ok()
    assert message in [e["event_id"] for e in page["chunk"]]
    assert (await client.request("GET", f"rooms/{readable}/event/{message}", token=bob)).ok()


async def test_events_stream_pages_in_order_and_waits(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    start = (await client.request("GET", "events", token=alice, params={"timeout": "0"})).ok()
    assert set(start) == {"start", "end", "chunk"}
    sent = [await say(client, room_id, alice, f"n{i}") for i in range(7)]
    seen: list[str] = []
    token = start["end"]
    for _ in range(5):
        page = await client.request(
            "GET", "events", token=alice, params={"from": token, "timeout": "0", "limit": "3"}
        )
        body = page.ok()
        assert len(body["chunk"]) <= 3
        seen += [e["event_id"] for e in body["chunk"] if e["type"] == "m.room.message"]
        token = body["end"]
        if len(seen) == len(sent):
            break
    assert seen == sent

    waiting = await LongPoll.start(
        client.request("GET", "events", token=alice, params={"from": token, "timeout": "10000"}),
        10,
    )
    waiting.assert_waiting()
    woken_by = await say(client, room_id, alice, "wake")
    waited = await waiting.woken()
    assert woken_by in [e["event_id"] for e in waited.ok()["chunk"]]


async def test_events_peek_into_world_readable_room(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    readable = await create_room(client, alice, preset="public_chat")
    await set_visibility(client, readable, alice, "world_readable")
    shared = await create_room(client, alice, preset="public_chat")
    refused = await client.request(
        "GET", "events", token=bob, params={"room_id": shared, "timeout": "0"}
    )
    assert refused.status == 403
    start = await client.request(
        "GET", "events", token=bob, params={"room_id": readable, "timeout": "0"}
    )
    message = await say(client, readable, alice, "peek at me")
    page = await client.request(
        "GET",
        "events",
        token=bob,
        params={"room_id": readable, "from": start.ok()["end"], "timeout": "5000"},
    )
    assert message in [e["event_id"] for e in page.ok()["chunk"]]


async def test_bad_legacy_parameters_are_400_not_500(client: MatrixClient) -> None:
    alice = await client.register()
    for path, params in (
        ("events", {"from": "garbage"}),
        ("events", {"room_id": "not-a-room"}),
        ("events", {"timeout": "-1"}),
        ("events", {"limit": "x"}),
        ("initialSync", {"limit": "-1"}),
        ("rooms/not-a-room/initialSync", {}),
    ):
        response = await client.request("GET", path, token=alice, params=params)
        assert response.status == 400, (path, params, response.body)
        assert response.body["errcode"] == "M_INVALID_PARAM"
    unknown = await client.request("GET", "rooms/!nowhere:localhost/initialSync", token=alice)
    assert unknown.status == 403
    peek = await client.request(
        "GET", "events", token=alice, params={"room_id": "!nowhere:localhost", "timeout": "0"}
    )
    assert peek.status == 403
