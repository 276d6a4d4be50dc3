"""A room that comes into view of a woken long-poll is answered from what the server
holds in memory when it can (the room's newest events and the rows their commits wrote:
``BumpStamps.arrivals``, ``PushActionsService.counted``), and from storage otherwise.
Either way the answer must be exactly what storage tells: the page and ``limited`` (a
room with exactly ``timeline_limit`` events, an ignored sender's newest event, a
redaction), and the unread counts, checked against /sync's. On every backend."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import say
from harness.sliding_sync import create_room, join, one_list, sliding

_POLL_MS = 10_000


def body(timeline_limit: int, conn_id: str) -> dict[str, Any]:
    """A one-room window: a room leaves it whenever another has a newer event."""
    return {"lists": one_list(0, timeline_limit=timeline_limit), "conn_id": conn_id}


async def sync_counts(client: MatrixClient, account: Account, room_id: str) -> tuple[int, int]:
    """(notifications, highlights) as /sync tells them (read from storage)."""
    response = (await client.request("GET", "sync", token=account)).ok()
    unread = response["rooms"]["join"][room_id].get("unread_notifications", {})
    return unread.get("notification_count", 0), unread.get("highlight_count", 0)


async def woken(
    client: MatrixClient, account: Account, send: Any, timeline_limit: int, conn_id: str
) -> dict[str, Any]:
    """The answer of a new connection's long-poll woken by ``send()`` (awaited once the
    poll waits): the room ``send`` brings into view is new to the connection."""
    pos = (await sliding(client, account, body(timeline_limit, conn_id)))["pos"]
    poll = asyncio.ensure_future(
        sliding(client, account, body(timeline_limit, conn_id), pos=pos, timeout_ms=_POLL_MS)
    )
    await asyncio.sleep(0.3)
    await send()
    return await asyncio.wait_for(poll, _POLL_MS / 1000 + 5)


def texts(room: dict[str, Any]) -> list[object]:
    return [e["content"].get("body") for e in room.get("timeline", [])]


async def test_a_woken_room_counts_as_sync_does(client: MatrixClient) -> None:
    """Messages, a mention, a muted room, an ignored sender and the user's own message,
    each bringing the room into view of a woken poll."""
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = await create_room(client, alice, preset="public_chat")
    other = await create_room(client, alice, preset="public_chat")
    for room in (room_id, other):
        await join(client, bob, room)
    await join(client, carol, room_id)
    await say(client, room_id, alice, "before")
    mention = {"m.mentions": {"user_ids": [bob.user_id]}}
    ignore = f"user/{quote(bob.user_id)}/account_data/m.ignored_user_list"
    ignoring: dict[str, Any] = {"ignored_users": {carol.user_id: {}}}
    (await client.request("PUT", ignore, json=ignoring, token=bob)).ok()
    steps: list[tuple[Account, str, dict[str, Any]]] = [
        (alice, "one", {}),
        (alice, "two", mention),
        (carol, "ignored", {}),
        (alice, "three", {}),
        (bob, "mine", {}),
        (alice, "four", mention),
    ]
    for index, (sender, text, extra) in enumerate(steps):
        if text == "three":  # from now on the room is muted for bob
            rule = f"pushrules/global/room/{quote(room_id)}"
            (await client.request("PUT", rule, json={"actions": []}, token=bob)).ok()
        await say(client, other, alice, f"pushes {room_id} out of view")

        async def send(sender: Account = sender, text: str = text, extra: Any = extra) -> None:
            await say(client, room_id, sender, text, **extra)

        answer = await woken(client, bob, send, 1, f"step{index}")
        room = answer["rooms"][room_id]
        assert room["initial"] is True and room["limited"] is True
        # The ignored sender's message is left out: the page is the one before it.
        assert texts(room) == (["two"] if sender is carol else [text])
        counted = (room["notification_count"], room["highlight_count"])
        assert counted == await sync_counts(client, bob, room_id), text


async def test_limited_with_exactly_timeline_limit_events(client: MatrixClient) -> None:
    """A room of exactly N events is not ``limited`` at N, and is at N after one more;
    a page reaching back to the user's own join is read, not assumed ``limited``."""
    alice = await client.register()
    room_id = await create_room(client, alice, preset="private_chat")
    other = await create_room(client, alice, preset="private_chat")
    subscription = {room_id: {"timeline_limit": 100, "required_state": []}}
    everything = await sliding(client, alice, {"room_subscriptions": subscription})
    total = len(everything["rooms"][room_id]["timeline"])
    assert everything["rooms"][room_id]["limited"] is False
    limit = total + 1
    await say(client, other, alice, "other room first")
    answer = await woken(client, alice, lambda: say(client, room_id, alice, "n+1"), limit, "a")
    room = answer["rooms"][room_id]
    assert room["limited"] is False and len(room["timeline"]) == limit
    await say(client, other, alice, "other room again")
    answer = await woken(client, alice, lambda: say(client, room_id, alice, "n+2"), limit, "b")
    room = answer["rooms"][room_id]
    assert room["limited"] is True and len(room["timeline"]) == limit
    assert texts(room)[-2:] == ["n+1", "n+2"]


async def test_a_woken_room_after_a_redaction(client: MatrixClient) -> None:
    """A kept page whose event is then redacted is served redacted."""
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    other = await create_room(client, alice, preset="public_chat")
    for room in (room_id, other):
        await join(client, bob, room)
    target = await say(client, room_id, alice, "to redact")
    await say(client, room_id, alice, "kept")
    # A first connection keeps the room's page (three events, ``limited``).
    first = await sliding(client, bob, body(3, "first"))
    assert texts(first["rooms"][room_id])[-2:] == ["to redact", "kept"]
    await say(client, other, alice, "other")

    async def redact() -> None:
        path = f"rooms/{quote(room_id)}/redact/{quote(target)}/r1"
        (await client.request("PUT", path, json={}, token=alice)).ok()

    answer = await woken(client, bob, redact, 3, "second")
    room = answer["rooms"][room_id]
    assert room["limited"] is True
    redacted, kept, redaction = room["timeline"]
    assert redacted["event_id"] == target and redacted["content"] == {}
    assert kept["content"]["body"] == "kept"
    assert redaction["type"] == "m.room.redaction"


async def test_a_room_never_answered_counts_right_when_it_comes_into_view(
    client: MatrixClient,
) -> None:
    """Unread messages and a mention in a room no connection was ever sent: the first
    long-poll's wait had its counts kept, the message that brings it into view adds to
    them."""
    alice, bob = await client.register(), await client.register()
    unseen = await create_room(client, alice, preset="public_chat")
    await join(client, bob, unseen)
    await say(client, unseen, alice, "unread one")
    await say(client, unseen, alice, "unread two", **{"m.mentions": {"user_ids": [bob.user_id]}})
    newer = await create_room(client, alice, preset="public_chat")
    await join(client, bob, newer)
    await say(client, newer, alice, "in view")

    async def send() -> None:
        await say(client, unseen, alice, "three")

    answer = await woken(client, bob, send, 1, "unseen")
    room = answer["rooms"][unseen]
    assert room["initial"] is True and texts(room) == ["three"] and room["limited"] is True
    assert (room["notification_count"], room["highlight_count"]) == (3, 1)
    assert await sync_counts(client, bob, unseen) == (3, 1)
