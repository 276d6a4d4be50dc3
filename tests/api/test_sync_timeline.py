"""Which events a joined room's timeline shows in /sync, over HTTP on every backend
(Client-Server API, "Syncing" and "Room History Visibility")."""

from __future__ import annotations

import json
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import say, shared_room
from harness.sync import LongPoll, sync, sync_since


async def set_visibility(client: MatrixClient, room_id: str, account: Account, value: str) -> None:
    body = {"history_visibility": value}
    path = f"rooms/{room_id}/state/m.room.history_visibility"
    (await client.request("PUT", path, json=body, token=account)).ok()


async def test_a_profile_change_is_not_a_new_join(client: MatrixClient) -> None:
    alice = await client.register()
    created = await client.request("POST", "createRoom", json={}, token=alice)
    room_id = created.ok()["room_id"]
    await say(client, room_id, alice, "before")
    since = (await sync(client, alice))["next_batch"]
    path = f"profile/{quote(alice.user_id, safe='')}/displayname"
    (await client.request("PUT", path, json={"displayname": "Alice"}, token=alice)).ok()
    room = (await sync(client, alice, since=since))["rooms"]["join"][room_id]
    # Only the new member event, not the room's history as for a room just joined.
    assert [e["type"] for e in room["timeline"]["events"]] == ["m.room.member"]
    assert room["timeline"]["limited"] is False
    assert room["state"]["events"] == []


async def test_visibility_changes_show_on_their_boundaries(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id = created.ok()["room_id"]
    for value, text in (("joined", "1"), ("invited", "2"), ("shared", "3")):
        await set_visibility(client, room_id, alice, value)
        await say(client, room_id, alice, text)
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    timeline = (await sync(client, bob))["rooms"]["join"][room_id]["timeline"]["events"]
    shown = [
        e["content"].get("history_visibility") or e["content"].get("body") or e["type"]
        for e in timeline[-4:]
    ]
    # "joined" replaced shared and "shared" replaced invited: each is seen from its
    # less restrictive side; messages 1 and 2 are not.
    assert shown == ["joined", "shared", "3", "m.room.member"]


async def test_a_room_joined_and_left_since_the_token_comes_with_its_state(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    created = await client.request("POST", "createRoom", json={"name": "Brief"}, token=alice)
    room_id = created.ok()["room_id"]
    body = {"user_id": bob.user_id}
    (await client.request("POST", f"rooms/{room_id}/invite", json=body, token=alice)).ok()
    only_names = '{"room": {"timeline": {"types": []}, "state": {"types": ["m.room.name"]}}}'
    since = (await sync(client, bob, filter=only_names))["next_batch"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    left = (await sync(client, bob, filter=only_names, since=since))["rooms"]["leave"][room_id]
    assert [e["content"]["name"] for e in left["state"]["events"]] == ["Brief"]


async def test_current_state_shows_in_the_timeline_under_joined_history(
    client: MatrixClient,
) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id = created.ok()["room_id"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    await set_visibility(client, room_id, alice, "joined")
    since = (await sync(client, bob))["next_batch"]
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=carol)).ok()
    hidden = await say(client, room_id, alice, "while bob was away")
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    timeline = (await sync(client, bob, since=since))["rooms"]["join"][room_id]["timeline"]
    ids = [e["event_id"] for e in timeline["events"]]
    # Carol's join is current state: shown although sent while Bob could not see.
    assert any(
        e["type"] == "m.room.member" and e["state_key"] == carol.user_id for e in timeline["events"]
    )
    assert hidden not in ids


async def test_syncs_woken_by_one_message_share_it_and_see_its_redaction(
    client: MatrixClient,
) -> None:
    """Woken syncs read a batch's new events from what the commit handed over (issue 15):
    each gets the event as stored, its transaction ID only for the sender's device, and
    a redaction committed later."""
    alice, bob, room_id = await shared_room(client)
    tokens = {a.user_id: (await sync(client, a))["next_batch"] for a in (alice, bob)}
    no_presence = json.dumps({"presence": {"types": []}})
    polls = [
        await LongPoll.start(
            sync(client, a, since=tokens[a.user_id], timeout="10000", filter=no_presence), 10
        )
        for a in (alice, bob)
    ]
    for poll in polls:
        poll.assert_waiting()
    event_id = await say(client, room_id, alice, "hello")
    seen = []
    for poll, account in zip(polls, (alice, bob), strict=True):
        response = await poll.woken()
        tokens[account.user_id] = response["next_batch"]
        events = response["rooms"]["join"][room_id]["timeline"]["events"]
        seen.append(next(e for e in events if e["event_id"] == event_id))
    assert [e["content"]["body"] for e in seen] == ["hello", "hello"]
    assert "transaction_id" in seen[0]["unsigned"]
    assert "transaction_id" not in seen[1]["unsigned"]

    path = f"rooms/{quote(room_id)}/redact/{quote(event_id)}/r1"
    redaction_id = (await client.request("PUT", path, json={}, token=alice)).ok()["event_id"]
    after = await sync_since(client, bob, tokens[bob.user_id])
    timeline = after["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["event_id"] for e in timeline] == [redaction_id]
    page = (
        await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=bob, params={"dir": "b", "limit": "2"}
        )
    ).ok()["chunk"]
    original = next(e for e in page if e["event_id"] == event_id)
    assert original["content"] == {}
    assert original["unsigned"]["redacted_because"]["event_id"] == redaction_id
