"""Unread counts follow read receipts in the syncs they wake, over HTTP against a real
Peyvand (Client-Server API, "Receiving notifications", "Receipts"). Each woken sync
reads the unthreaded receipt positions from memory (``services.sync.read_positions``,
issue 15): a receipt must move them before the sync it wakes counts."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient
from harness.rooms import say, shared_room
from harness.sync import LongPoll, sync_since

THREADED = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


async def receipt(
    client: MatrixClient, account: Account, room_id: str, receipt_type: str, event_id: str
) -> None:
    path = f"rooms/{quote(room_id)}/receipt/{receipt_type}/{quote(event_id)}"
    (await client.request("POST", path, json={}, token=account)).ok()


async def woken_by_receipt(
    client: MatrixClient,
    account: Account,
    room_id: str,
    since: str,
    receipt_type: str,
    event_id: str,
    **params: str,
) -> dict[str, Any]:
    """The sync from ``since`` that ``account``'s receipt on ``event_id`` wakes."""
    query = {"since": since, "timeout": "10000", **params}
    request = client.request("GET", "sync", token=account, params=query)
    poll = await LongPoll.start(request, 10)
    poll.assert_waiting()
    await receipt(client, account, room_id, receipt_type, event_id)
    body: dict[str, Any] = (await poll.woken()).ok()
    return body


def unread(response: dict[str, Any], room_id: str) -> tuple[int, int]:
    counts = response["rooms"]["join"][room_id]["unread_notifications"]
    return counts["notification_count"], counts["highlight_count"]


@pytest.mark.parametrize("receipt_type", ["m.read", "m.read.private"])
async def test_a_receipt_lowers_the_counts_of_the_sync_it_wakes(
    client: MatrixClient, receipt_type: str
) -> None:
    alice, bob, room_id = await shared_room(client)
    sent = [await say(client, room_id, alice, f"m{n}") for n in range(4)]
    first = await sync_since(client, bob)
    assert unread(first, room_id) == (4, 0)

    woken = await woken_by_receipt(client, bob, room_id, first["next_batch"], receipt_type, sent[1])
    assert unread(woken, room_id) == (2, 0)

    # The next message's sync counts from the receipt too; a receipt further on moves
    # it again, and one on an earlier event changes nothing.
    poll = await LongPoll.start(sync_since(client, bob, woken["next_batch"], 10_000), 10)
    poll.assert_waiting()
    await say(client, room_id, alice, "m4")
    after_message = await poll.woken()
    assert unread(after_message, room_id) == (3, 0)
    woken = await woken_by_receipt(
        client, bob, room_id, after_message["next_batch"], receipt_type, sent[3]
    )
    assert unread(woken, room_id) == (1, 0)
    await receipt(client, bob, room_id, receipt_type, sent[0])
    assert unread(await sync_since(client, bob), room_id) == (1, 0)


async def test_the_later_of_both_receipt_types_counts(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    sent = [await say(client, room_id, alice, f"m{n}") for n in range(4)]
    first = await sync_since(client, bob)
    woken = await woken_by_receipt(
        client, bob, room_id, first["next_batch"], "m.read.private", sent[2]
    )
    assert unread(woken, room_id) == (1, 0)
    # A public receipt behind the private one does not count the events between again.
    await receipt(client, bob, room_id, "m.read", sent[0])
    assert unread(await sync_since(client, bob), room_id) == (1, 0)


async def test_a_receipt_lowers_the_thread_split_counts_of_the_sync_it_wakes(
    client: MatrixClient,
) -> None:
    alice, bob, room_id = await shared_room(client)
    sent = [await say(client, room_id, alice, f"m{n}") for n in range(3)]
    first = await sync_since(client, bob)
    assert unread(first, room_id) == (3, 0)
    woken = await woken_by_receipt(
        client, bob, room_id, first["next_batch"], "m.read", sent[0], filter=THREADED
    )
    assert unread(woken, room_id) == (2, 0)
