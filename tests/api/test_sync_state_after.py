"""/sync with ``use_state_after`` (Client-Server API v1.16, "Syncing"; MSC4222's
``org.matrix.msc4222.use_state_after``, which matrix-js-sdk sends), over HTTP on every
backend: each room's state at the end of its timeline in ``state_after``, never
``state``, and a client that layers each response's ``state_after`` over the last ends
with the room's state as ``/state`` tells it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import put_state, say, shared_room
from harness.sync import sync

STABLE = {"use_state_after": "true"}
UNSTABLE = {"org.matrix.msc4222.use_state_after": "true"}
LAZY = json.dumps({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}})


def _state_ids(section: dict[str, Any], key: str = "state_after") -> dict[str, str]:
    return {f"{e['type']}|{e['state_key']}": e["event_id"] for e in section[key]["events"]}


async def _room_state(client: MatrixClient, account: Account, room_id: str) -> dict[str, str]:
    events = (await client.request("GET", f"rooms/{quote(room_id)}/state", token=account)).ok()
    return {f"{e['type']}|{e['state_key']}": e["event_id"] for e in events}


async def test_state_after_holds_the_state_at_the_timeline_end(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    topic = await put_state(client, alice, room_id, "m.room.topic", {"topic": "last"})
    first = await sync(client, bob, **STABLE)
    room = first["rooms"]["join"][room_id]
    assert "state" not in room
    held = _state_ids(room)
    # The whole state at the end, the topic set in the timeline included.
    assert held == await _room_state(client, bob, room_id)
    assert held["m.room.topic|"] == topic
    assert topic in {e["event_id"] for e in room["timeline"]["events"]}

    # Incremental: only what changed, the timeline's own state events included.
    renamed = await put_state(client, alice, room_id, "m.room.name", {"name": "n"})
    await say(client, room_id, alice, "after the rename")
    second = await sync(client, bob, since=first["next_batch"], **STABLE)
    room = second["rooms"]["join"][room_id]
    assert "state" not in room
    assert _state_ids(room) == {"m.room.name|": renamed}
    held.update(_state_ids(room))
    assert held == await _room_state(client, bob, room_id)

    # Messages alone change no state: an empty section, still there (required).
    await say(client, room_id, alice, "just talk")
    third = await sync(client, bob, since=second["next_batch"], **STABLE)
    assert third["rooms"]["join"][room_id]["state_after"] == {"events": []}


async def test_the_unstable_name_answers_under_its_own_key(client: MatrixClient) -> None:
    _, bob, room_id = await shared_room(client)
    first = await sync(client, bob, **UNSTABLE)
    room = first["rooms"]["join"][room_id]
    assert set(room) & {"state", "state_after"} == set()
    assert _state_ids(room, "org.matrix.msc4222.state_after") == await _room_state(
        client, bob, room_id
    )
    # Without either, ``state`` as before.
    plain = (await sync(client, bob))["rooms"]["join"][room_id]
    assert "state" in plain and "state_after" not in plain
    bad = await client.request("GET", "sync", token=bob, params={"use_state_after": "yes"})
    assert (bad.status, bad.body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_a_gap_brings_every_change_across_it(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    carol = await client.register()
    since = (await sync(client, bob, **STABLE))["next_batch"]
    topic = await put_state(client, alice, room_id, "m.room.topic", {"topic": "in the gap"})
    (await client.request("POST", f"join/{room_id}", json={}, token=carol)).ok()
    for i in range(5):
        await say(client, room_id, alice, f"filler {i}")
    one = json.dumps({"room": {"timeline": {"limit": 2}}})
    room = (await sync(client, bob, since=since, filter=one, **STABLE))["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    changed = _state_ids(room)
    assert changed["m.room.topic|"] == topic
    assert f"m.room.member|{carol.user_id}" in changed
    assert set(changed) == {"m.room.topic|", f"m.room.member|{carol.user_id}"}


async def test_lazy_members_include_senders_whose_member_is_in_the_timeline(
    client: MatrixClient,
) -> None:
    alice, bob, room_id = await shared_room(client)
    # Named: no heroes, whose members lazy-loading adds too.
    await put_state(client, alice, room_id, "m.room.name", {"name": "named"})
    carol = await client.register()
    since = (await sync(client, bob, filter=LAZY, **STABLE))["next_batch"]
    (await client.request("POST", f"join/{room_id}", json={}, token=carol)).ok()
    await say(client, room_id, carol, "hello")
    room = (await sync(client, bob, since=since, filter=LAZY, **STABLE))["rooms"]["join"][room_id]
    # Her join is in the timeline, which is not state to the client: it comes here too.
    members = {k for k in _state_ids(room) if k.startswith("m.room.member|")}
    assert members == {f"m.room.member|{carol.user_id}"}
    # An initial lazy sync: the senders' members and the user's own, no one else's.
    await say(client, room_id, carol, "and again")
    initial = (await sync(client, alice, filter=LAZY, **STABLE))["rooms"]["join"][room_id]
    senders = {e["sender"] for e in initial["timeline"]["events"]}
    assert senders == {carol.user_id}
    members = {k for k in _state_ids(initial) if k.startswith("m.room.member|")}
    assert members == {f"m.room.member|{carol.user_id}", f"m.room.member|{alice.user_id}"}


async def test_a_left_room_comes_with_its_state_at_the_leave(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    since = (await sync(client, bob, **STABLE))["next_batch"]
    topic = await put_state(client, alice, room_id, "m.room.topic", {"topic": "before leaving"})
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    await put_state(client, alice, room_id, "m.room.topic", {"topic": "after bob left"})
    room = (await sync(client, bob, since=since, **STABLE))["rooms"]["leave"][room_id]
    assert "state" not in room
    changed = _state_ids(room)
    assert changed["m.room.topic|"] == topic
    assert changed[f"m.room.member|{bob.user_id}"] == room["timeline"]["events"][-1]["event_id"]
