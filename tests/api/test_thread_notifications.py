"""Unread counts per thread over HTTP against a real Peyvand (Client-Server API,
"Threaded read receipts", "Receiving notifications"; sync.yaml
``unread_thread_notifications``): thread replies from another user count in their
thread, a threaded receipt clears that thread only, a ``main`` receipt the main
timeline only, an unthreaded one everything; with the filter's
``unread_thread_notifications`` the room's counts are the main timeline's."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import create_room, say
from harness.sync import sync

_THREADED = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


async def reply(
    client: MatrixClient, room_id: str, account: Account, root: str, text: str, **extra: Any
) -> str:
    relation = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    return await say(client, room_id, account, text, **relation, **extra)


async def receipt(
    client: MatrixClient, account: Account, room_id: str, event_id: str, thread_id: str | None
) -> None:
    body = {} if thread_id is None else {"thread_id": thread_id}
    path = f"rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
    (await client.request("POST", path, json=body, token=account)).ok()


def pair(counts: dict[str, int]) -> tuple[int, int]:
    return counts["notification_count"], counts["highlight_count"]


async def counts(
    client: MatrixClient, account: Account, room_id: str
) -> tuple[tuple[int, int], tuple[int, int], dict[str, tuple[int, int]]]:
    """The room's counts in an initial /sync without the filter, then with it: (whole
    room), (main timeline), {thread root: (its counts)}."""
    plain = (await sync(client, account, timeout="0"))["rooms"]["join"][room_id]
    assert "unread_thread_notifications" not in plain
    threaded = (await sync(client, account, timeout="0", filter=_THREADED))["rooms"]["join"][
        room_id
    ]
    per_thread = threaded.get("unread_thread_notifications", {})
    return (
        pair(plain["unread_notifications"]),
        pair(threaded["unread_notifications"]),
        {root: pair(c) for root, c in per_thread.items()},
    )


async def test_counts_per_thread_and_threaded_receipts(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=bob)).ok()
    root = await say(client, room_id, alice, "a thread starts here")
    other_root = await say(client, room_id, bob, "and another here")
    await reply(client, room_id, bob, root, "one")
    second = await reply(client, room_id, bob, root, "two")
    mentions = {"m.mentions": {"user_ids": [alice.user_id]}}
    await reply(client, room_id, bob, root, "alice, look", **mentions)
    main = await say(client, room_id, bob, "back in the room")

    # The main timeline: bob's other root and his message (alice's own root reads what
    # came before it); the thread: three replies, one mentioning alice.
    assert await counts(client, alice, room_id) == ((5, 1), (2, 0), {root: (3, 1)})
    # Bob's own replies count for nobody but alice.
    assert await counts(client, bob, room_id) == ((0, 0), (0, 0), {})

    # A receipt in the thread reads the thread up to it, nothing else.
    await receipt(client, alice, room_id, second, root)
    assert await counts(client, alice, room_id) == ((3, 1), (2, 0), {root: (1, 1)})
    # A main-timeline receipt after every reply reads the main timeline only.
    await receipt(client, alice, room_id, main, "main")
    assert await counts(client, alice, room_id) == ((1, 1), (0, 0), {root: (1, 1)})

    # New replies in both threads count in their own thread.
    await reply(client, room_id, bob, root, "three")
    in_other = await reply(client, room_id, bob, other_root, "elsewhere")
    assert await counts(client, alice, room_id) == (
        (3, 1),
        (0, 0),
        {root: (2, 1), other_root: (1, 0)},
    )
    # A threaded receipt on the root of the other thread reads nothing of its replies.
    await receipt(client, alice, room_id, other_root, other_root)
    assert (await counts(client, alice, room_id))[2][other_root] == (1, 0)
    await receipt(client, alice, room_id, in_other, other_root)
    assert await counts(client, alice, room_id) == ((2, 1), (0, 0), {root: (2, 1)})

    # An unthreaded receipt reads everything up to its event, in every thread.
    await receipt(client, alice, room_id, in_other, None)
    assert await counts(client, alice, room_id) == ((0, 0), (0, 0), {})


async def test_own_reply_in_another_thread_keeps_a_threads_mention(
    client: MatrixClient,
) -> None:
    """Sending in a thread reads that thread for its sender only, as a threaded receipt
    (and as Synapse counts): alice's reply in bob's thread leaves bob's mention of her
    in her own thread unread, and bob's root in the main timeline; her own message in
    the main timeline then reads the main timeline only."""
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=bob)).ok()
    a_root = await say(client, room_id, alice, "alice's root")
    b_root = await say(client, room_id, bob, "bob's root")
    await reply(
        client, room_id, bob, a_root, "alice, look", **{"m.mentions": {"user_ids": [alice.user_id]}}
    )
    await reply(
        client, room_id, alice, b_root, "bob, look", **{"m.mentions": {"user_ids": [bob.user_id]}}
    )
    await reply(client, room_id, alice, b_root, "alice elsewhere")
    await reply(client, room_id, bob, a_root, "bob elsewhere")

    assert await counts(client, alice, room_id) == ((3, 1), (1, 0), {a_root: (2, 1)})
    # Bob's own root read alice's before it.
    assert await counts(client, bob, room_id) == ((2, 1), (0, 0), {b_root: (2, 1)})
    await say(client, room_id, alice, "in the room")
    assert await counts(client, alice, room_id) == ((2, 1), (0, 0), {a_root: (2, 1)})


async def test_thread_counts_leave_out_ignored_users(client: MatrixClient) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = await create_room(client, alice, preset="public_chat")
    for member in (bob, carol):
        (await client.request("POST", f"join/{quote(room_id)}", json={}, token=member)).ok()
    root = await say(client, room_id, alice, "root")
    await reply(client, room_id, bob, root, "from bob")
    await reply(client, room_id, carol, root, "from carol")
    await say(client, room_id, carol, "carol in the room")
    ignore = await client.request(
        "PUT",
        f"user/{quote(alice.user_id)}/account_data/m.ignored_user_list",
        json={"ignored_users": {carol.user_id: {}}},
        token=alice,
    )
    ignore.ok()
    assert await counts(client, alice, room_id) == ((1, 0), (0, 0), {root: (1, 0)})


async def test_relations_of_a_thread_reply_are_in_its_thread(client: MatrixClient) -> None:
    """An event relating to a thread reply without ``m.thread`` (a reference, a
    reaction) is in the reply's thread ("Threaded read receipts": relations are
    followed up to 3 hops): its notification counts there, and sending one reads that
    thread, not the main timeline; it is unread in the thread even after the thread's
    latest reply has been read."""
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=bob)).ok()
    root = await say(client, room_id, alice, "root")
    in_thread = await reply(client, room_id, alice, root, "in the thread")
    in_room = await say(client, room_id, alice, "in the room")
    assert await counts(client, bob, room_id) == ((3, 0), (2, 0), {root: (1, 0)})

    reference = {"rel_type": "m.reference", "event_id": in_thread}
    await say(client, room_id, alice, "about that reply", **{"m.relates_to": reference})
    assert await counts(client, bob, room_id) == ((4, 0), (2, 0), {root: (2, 0)})

    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": in_thread, "key": "+1"}}
    path = f"rooms/{quote(room_id)}/send/m.reaction/r1"
    (await client.request("PUT", path, json=reaction, token=bob)).ok()
    assert await counts(client, bob, room_id) == ((2, 0), (2, 0), {})

    # A reference after the thread's latest reply, which bob has read, is unread in the
    # thread (the thread's latest reply does not move).
    await say(client, room_id, alice, "and again", **{"m.relates_to": reference})
    assert await counts(client, bob, room_id) == ((3, 0), (2, 0), {root: (1, 0)})
    # Read again from storage (a receipt drops what /sync kept): the same in the thread.
    await receipt(client, bob, room_id, in_room, "main")
    assert await counts(client, bob, room_id) == ((1, 0), (0, 0), {root: (1, 0)})
