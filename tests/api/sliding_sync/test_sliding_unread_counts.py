"""Sliding sync's unread counts are kept between requests (``unread_counts.py``); each
fresh connection must still see them as they are now: after a new message, a receipt
(public, private, threaded), the user's own message, and ignoring the sender. On every
backend."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import say
from harness.sliding_sync import create_room, join, one_list, sliding

_THREADS = one_list(timeline_limit=1)
_THREADS["all"]["unread_thread_notifications"] = True


async def counts(client: MatrixClient, account: Account, room_id: str) -> tuple[int, int]:
    """(notifications, highlights) in a new connection's answer."""
    room = (await sliding(client, account, {"lists": one_list(timeline_limit=1)}))["rooms"]
    return room[room_id]["notification_count"], room[room_id]["highlight_count"]


async def thread_counts(client: MatrixClient, account: Account, room_id: str) -> dict[str, Any]:
    """The main timeline's count and each thread's, in a new connection's answer."""
    room = (await sliding(client, account, {"lists": _THREADS}))["rooms"][room_id]
    return {"main": room["notification_count"], **room.get("unread_thread_notifications", {})}


async def receipt(
    client: MatrixClient, account: Account, room_id: str, event_id: str, kind: str, **body: str
) -> None:
    path = f"rooms/{quote(room_id)}/receipt/{kind}/{quote(event_id)}"
    (await client.request("POST", path, json=body, token=account)).ok()


async def test_kept_counts_follow_messages_receipts_and_own_events(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    first = await say(client, room_id, alice, "one")
    assert await counts(client, bob, room_id) == (1, 0)
    assert await counts(client, bob, room_id) == (1, 0)  # kept: the same
    mention = {"m.mentions": {"user_ids": [bob.user_id]}}
    second = await say(client, room_id, alice, "two", **mention)
    assert await counts(client, bob, room_id) == (2, 1)
    await receipt(client, bob, room_id, first, "m.read")
    assert await counts(client, bob, room_id) == (1, 1)
    await receipt(client, bob, room_id, second, "m.read.private")
    assert await counts(client, bob, room_id) == (0, 0)
    await say(client, room_id, alice, "three")
    assert await counts(client, bob, room_id) == (1, 0)
    await say(client, room_id, bob, "mine")  # sending reads the room's main timeline
    assert await counts(client, bob, room_id) == (0, 0)


async def test_kept_counts_follow_ignoring_the_sender(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await say(client, room_id, alice, "one")
    assert await counts(client, bob, room_id) == (1, 0)
    path = f"user/{quote(bob.user_id)}/account_data/m.ignored_user_list"
    ignoring: dict[str, Any] = {"ignored_users": {alice.user_id: {}}}
    (await client.request("PUT", path, json=ignoring, token=bob)).ok()
    assert await counts(client, bob, room_id) == (0, 0)
    (await client.request("PUT", path, json={"ignored_users": {}}, token=bob)).ok()
    assert await counts(client, bob, room_id) == (1, 0)


async def test_kept_thread_counts_follow_a_threaded_receipt(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    root = await say(client, room_id, alice, "root")
    relation = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    reply = await say(client, room_id, alice, "in thread", **relation)
    assert await thread_counts(client, bob, room_id) == {
        "main": 1,
        root: {"notification_count": 1, "highlight_count": 0},
    }
    assert await counts(client, bob, room_id) == (2, 0)
    await receipt(client, bob, room_id, reply, "m.read", thread_id=root)
    assert await thread_counts(client, bob, room_id) == {"main": 1}
    assert await counts(client, bob, room_id) == (1, 0)
