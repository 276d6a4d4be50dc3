"""Unread counts of one room's members whose push outcomes differ, over HTTP against a
real Peyvand, as /sync shows them (Client-Server API, "Receiving notifications",
"Marking notifications as read", "Ignoring Users"; issue 15: one row per notifying
event for the room, exceptions only for members whose outcome differs)."""

from __future__ import annotations

from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import say
from harness.sync import sync_since


async def join(client: MatrixClient, account: Account, room_id: str) -> None:
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=account)).ok()


async def counts(client: MatrixClient, account: Account, room_id: str) -> tuple[int, int]:
    """(notification_count, highlight_count) of ``room_id`` in an initial /sync."""
    response = await sync_since(client, account)
    unread = response["rooms"]["join"][room_id]["unread_notifications"]
    return unread["notification_count"], unread["highlight_count"]


async def test_each_members_counts_in_one_room(client: MatrixClient) -> None:
    alice, bob, carol, dave, erin, frank = [await client.register() for _ in range(6)]
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    for member in (bob, carol, dave, erin):
        await join(client, member, room_id)
    # Dave mutes the room (a room rule without actions); erin ignores alice.
    muted = await client.request(
        "PUT", f"pushrules/global/room/{quote(room_id)}", json={"actions": []}, token=dave
    )
    muted.ok()
    ignore = await client.request(
        "PUT",
        f"user/{quote(erin.user_id)}/account_data/m.ignored_user_list",
        json={"ignored_users": {alice.user_id: {}}},
        token=erin,
    )
    ignore.ok()

    await say(client, room_id, alice, "one")
    second = await say(client, room_id, alice, "two")
    # Frank joins after two messages: they do not count for him.
    await join(client, frank, room_id)
    mentions = {"m.mentions": {"user_ids": [carol.user_id]}}
    await say(client, room_id, alice, "carol, look", **mentions)
    await say(client, room_id, alice, "four")
    # Bob's read receipt on the second message: the two after it count.
    receipt = f"rooms/{quote(room_id)}/receipt/m.read/{quote(second)}"
    (await client.request("POST", receipt, json={}, token=bob)).ok()

    assert await counts(client, bob, room_id) == (2, 0)
    assert await counts(client, carol, room_id) == (4, 1)
    assert await counts(client, dave, room_id) == (0, 0)
    assert await counts(client, erin, room_id) == (0, 0)
    assert await counts(client, frank, room_id) == (2, 0)
    assert await counts(client, alice, room_id) == (0, 0)

    # Carol answers: her own event reads everything before it; it counts for the others,
    # for erin too (she ignores alice only), not for dave.
    await say(client, room_id, carol, "seen")
    assert await counts(client, carol, room_id) == (0, 0)
    assert await counts(client, bob, room_id) == (3, 0)
    assert await counts(client, erin, room_id) == (1, 0)
    assert await counts(client, dave, room_id) == (0, 0)
    assert await counts(client, frank, room_id) == (3, 0)
    assert await counts(client, alice, room_id) == (1, 0)

    # A mention still reaches dave (override rules rank above room rules).
    await say(client, room_id, alice, "dave!", **{"m.mentions": {"user_ids": [dave.user_id]}})
    assert await counts(client, dave, room_id) == (1, 1)
    # Erin no longer ignores alice: alice's unread messages count again.
    unignore = await client.request(
        "PUT",
        f"user/{quote(erin.user_id)}/account_data/m.ignored_user_list",
        json={"ignored_users": {}},
        token=erin,
    )
    unignore.ok()
    assert await counts(client, erin, room_id) == (6, 0)


async def test_an_incremental_sync_counts_what_it_wakes_for(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    created = await client.request("POST", "createRoom", json={}, token=alice)
    room_id: str = created.ok()["room_id"]
    invite = await client.request(
        "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": bob.user_id}, token=alice
    )
    invite.ok()
    await join(client, bob, room_id)
    token = (await sync_since(client, bob))["next_batch"]
    await say(client, room_id, alice, "hi bob", **{"m.mentions": {"user_ids": [bob.user_id]}})
    response = await sync_since(client, bob, token, timeout_ms=5_000)
    unread = response["rooms"]["join"][room_id]["unread_notifications"]
    assert unread == {"notification_count": 1, "highlight_count": 1}
