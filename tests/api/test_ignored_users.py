"""Ignoring users over HTTP on every backend (Client-Server API, "Ignoring Users"): an
ignored user's messages and invites stay away from /sync, /messages and /context; their
state events still arrive."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import say
from harness.sync import sync


async def ignore(client: MatrixClient, account: Account, *users: Account) -> None:
    path = f"user/{quote(account.user_id, safe='')}/account_data/m.ignored_user_list"
    body: dict[str, dict[str, dict[str, Any]]] = {"ignored_users": {u.user_id: {} for u in users}}
    (await client.request("PUT", path, json=body, token=account)).ok()


async def shared_room(client: MatrixClient, alice: Account, bob: Account) -> str:
    body = {
        "preset": "public_chat",
        "power_level_content_override": {"users": {bob.user_id: 50}},
    }
    created = await client.request("POST", "createRoom", json=body, token=alice)
    room_id: str = created.ok()["room_id"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    return room_id


def timeline_ids(body: dict[str, Any], room_id: str) -> list[str]:
    return [e["event_id"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]]


async def test_ignored_users_messages_leave_sync_messages_and_context(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await shared_room(client, alice, bob)
    before = await say(client, room_id, bob, "before ignoring")
    mine = await say(client, room_id, alice, "mine")
    assert {before, mine} <= set(timeline_ids(await sync(client, alice), room_id))

    await ignore(client, alice, bob)
    hidden = await say(client, room_id, bob, "hidden")
    topic = await client.request(
        "PUT", f"rooms/{room_id}/state/m.room.topic", json={"topic": "by bob"}, token=bob
    )
    fresh = await sync(client, alice)
    seen = timeline_ids(fresh, room_id)
    assert mine in seen and before not in seen and hidden not in seen
    # State events from an ignored user still arrive.
    assert topic.ok()["event_id"] in seen

    # An incremental sync with only the ignored user's messages leaves the room out.
    await say(client, room_id, bob, "still hidden")
    quiet = await sync(client, alice, since=fresh["next_batch"], timeout="0")
    assert room_id not in quiet["rooms"]["join"]

    page = await client.request(
        "GET", f"rooms/{room_id}/messages", token=alice, params={"dir": "b", "limit": "50"}
    )
    paged = [e["event_id"] for e in page.ok()["chunk"]]
    assert mine in paged and before not in paged and hidden not in paged
    context = (await client.request("GET", f"rooms/{room_id}/context/{mine}", token=alice)).ok()
    around = [e["event_id"] for e in context["events_before"] + context["events_after"]]
    assert before not in around and hidden not in around
    assert (
        await client.request("GET", f"rooms/{room_id}/event/{hidden}", token=alice)
    ).status == 404
    # Bob still sees his own messages; un-ignoring brings new ones back.
    assert hidden in timeline_ids(await sync(client, bob), room_id)
    await ignore(client, alice)
    back = await say(client, room_id, bob, "back")
    assert back in timeline_ids(await sync(client, alice), room_id)


async def test_invites_from_ignored_users_are_not_sent(client: MatrixClient) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    await ignore(client, alice, bob)
    since = (await sync(client, alice))["next_batch"]
    rooms = []
    for inviter in (bob, carol):
        created = await client.request("POST", "createRoom", json={}, token=inviter)
        room_id = created.ok()["room_id"]
        body = {"user_id": alice.user_id}
        (await client.request("POST", f"rooms/{room_id}/invite", json=body, token=inviter)).ok()
        rooms.append(room_id)
    from_bob, from_carol = rooms
    incremental = await sync(client, alice, since=since)
    assert from_carol in incremental["rooms"]["invite"]
    assert from_bob not in incremental["rooms"]["invite"]
    initial = await sync(client, alice)
    assert from_carol in initial["rooms"]["invite"]
    assert from_bob not in initial["rooms"]["invite"]
