"""Unread counts follow membership changes over HTTP against a real Peyvand (Client-Server
API, "Receiving notifications"; issue 15: a room's push context is kept up to date one
membership change at a time instead of being rebuilt for every member): a newcomer with
custom rules is evaluated with them, a member who left stops counting and counts again
after rejoining, and a display-name change reaches ``contains_display_name`` at once."""

from __future__ import annotations

import itertools
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.sync import sync_since

_txn = itertools.count(1)


async def send(client: MatrixClient, account: Account, room_id: str, body: str) -> None:
    path = f"rooms/{quote(room_id)}/send/m.room.message/m{next(_txn)}"
    (
        await client.request("PUT", path, json={"msgtype": "m.text", "body": body}, token=account)
    ).ok()


async def membership(client: MatrixClient, account: Account, room_id: str, action: str) -> None:
    (await client.request("POST", f"rooms/{quote(room_id)}/{action}", json={}, token=account)).ok()


async def counts(client: MatrixClient, account: Account, room_id: str) -> tuple[int, int]:
    """(notification_count, highlight_count) of ``room_id`` in an initial /sync."""
    response = await sync_since(client, account)
    unread = response["rooms"]["join"][room_id]["unread_notifications"]
    return unread["notification_count"], unread["highlight_count"]


async def test_counts_follow_joins_leaves_rejoins_and_renames(client: MatrixClient) -> None:
    alice, bob, carol, dave = [await client.register() for _ in range(4)]
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    # Dave mutes the room before joining it; bob highlights on his display name.
    mute = f"pushrules/global/room/{quote(room_id)}"
    (await client.request("PUT", mute, json={"actions": []}, token=dave)).ok()
    name_rule = {
        "conditions": [{"kind": "contains_display_name"}],
        "actions": ["notify", {"set_tweak": "highlight"}],
    }
    rule_path = "pushrules/global/override/name"
    (await client.request("PUT", rule_path, json=name_rule, token=bob)).ok()
    for member in (bob, carol):
        await membership(client, member, room_id, "join")
    await send(client, alice, room_id, "one")
    await membership(client, dave, room_id, "join")
    await membership(client, carol, room_id, "leave")
    await send(client, alice, room_id, "two")
    await membership(client, carol, room_id, "join")
    profile = f"profile/{quote(bob.user_id)}/displayname"
    (await client.request("PUT", profile, json={"displayname": "Roberto"}, token=bob)).ok()
    await send(client, alice, room_id, "hello Roberto")

    # The rename is bob's own event, which reads up to it; the message after it names
    # him by his new name.
    assert await counts(client, bob, room_id) == (1, 1)
    # Joining reads up to the join: only what came after counts.
    assert await counts(client, carol, room_id) == (1, 0)
    assert await counts(client, dave, room_id) == (0, 0)
