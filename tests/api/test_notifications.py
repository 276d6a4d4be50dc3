"""Unread notification counts and ``m.push_rules`` account data over HTTP against a real
Peyvand, as seen through /sync (Client-Server API, "Push Notifications": "Receiving
notifications", "Marking notifications as read", "Push Rules: Events")."""

from __future__ import annotations

from typing import Any

from harness.client import MatrixClient
from harness.rooms import say, shared_room
from harness.sync import LongPoll, sync_since

MASTER_ENABLED = "pushrules/global/override/.m.rule.master/enabled"


def unread(response: dict[str, Any], room_id: str) -> dict[str, int]:
    counts: dict[str, int] = response["rooms"]["join"][room_id]["unread_notifications"]
    return counts


def global_account_data(response: dict[str, Any], event_type: str) -> dict[str, Any] | None:
    for event in response["account_data"]["events"]:
        if event["type"] == event_type:
            content: dict[str, Any] = event["content"]
            return content
    return None


async def test_counts_grow_highlight_and_clear_on_read_receipt(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    response = await sync_since(client, bob)
    assert unread(response, room_id) == {"notification_count": 0, "highlight_count": 0}
    token = response["next_batch"]

    await say(client, room_id, alice, "one")
    response = await sync_since(client, bob, token)
    assert unread(response, room_id) == {"notification_count": 1, "highlight_count": 0}
    await say(client, room_id, alice, "two")
    response = await sync_since(client, bob, response["next_batch"])
    assert unread(response, room_id) == {"notification_count": 2, "highlight_count": 0}

    mention = await say(
        client, room_id, alice, "bob, look", **{"m.mentions": {"user_ids": [bob.user_id]}}
    )
    response = await sync_since(client, bob, response["next_batch"])
    assert unread(response, room_id) == {"notification_count": 3, "highlight_count": 1}
    # The sender is never notified of their own events.
    assert unread(await sync_since(client, alice), room_id)["notification_count"] == 0
    # An initial sync shows the same counts.
    assert unread(await sync_since(client, bob), room_id) == {
        "notification_count": 3,
        "highlight_count": 1,
    }

    receipt = f"rooms/{room_id}/receipt/m.read/{mention}"
    (await client.request("POST", receipt, json={}, token=bob)).ok()
    response = await sync_since(client, bob, response["next_batch"])
    assert unread(response, room_id) == {"notification_count": 0, "highlight_count": 0}

    await say(client, room_id, alice, "after the receipt")
    response = await sync_since(client, bob, response["next_batch"])
    assert unread(response, room_id) == {"notification_count": 1, "highlight_count": 0}


async def test_private_read_receipt_clears_counts(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    await say(client, room_id, alice, "one")
    last = await say(client, room_id, alice, "two")
    assert unread(await sync_since(client, bob), room_id)["notification_count"] == 2
    receipt = f"rooms/{room_id}/receipt/m.read.private/{last}"
    (await client.request("POST", receipt, json={}, token=bob)).ok()
    assert unread(await sync_since(client, bob), room_id)["notification_count"] == 0


async def test_sending_a_message_reads_up_to_it(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    await say(client, room_id, alice, "one")
    await say(client, room_id, alice, "two")
    assert unread(await sync_since(client, bob), room_id)["notification_count"] == 2
    await say(client, room_id, bob, "answer")
    assert unread(await sync_since(client, bob), room_id)["notification_count"] == 0


async def test_enabled_master_rule_stops_counting(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    await say(client, room_id, alice, "counted")
    (await client.request("PUT", MASTER_ENABLED, json={"enabled": True}, token=bob)).ok()
    await say(client, room_id, alice, "not counted")
    await say(client, room_id, alice, "nor this", **{"m.mentions": {"user_ids": [bob.user_id]}})
    assert unread(await sync_since(client, bob), room_id) == {
        "notification_count": 1,
        "highlight_count": 0,
    }
    (await client.request("PUT", MASTER_ENABLED, json={"enabled": False}, token=bob)).ok()
    await say(client, room_id, alice, "counted again")
    assert unread(await sync_since(client, bob), room_id)["notification_count"] == 2


async def test_push_rules_in_initial_sync_and_after_a_change(client: MatrixClient) -> None:
    alice = await client.register()
    response = await sync_since(client, alice)
    rules = global_account_data(response, "m.push_rules")
    assert rules is not None
    assert rules == (await client.request("GET", "pushrules/", token=alice)).ok()
    assert rules["global"]["override"][0]["rule_id"] == ".m.rule.master"
    assert rules["global"]["override"][0]["enabled"] is False

    # The change wakes a waiting sync and arrives in it.
    waiting = await LongPoll.start(
        sync_since(client, alice, response["next_batch"], timeout_ms=10_000), 10
    )
    waiting.assert_waiting()
    (await client.request("PUT", MASTER_ENABLED, json={"enabled": True}, token=alice)).ok()
    response = await waiting.woken()
    rules = global_account_data(response, "m.push_rules")
    assert rules is not None
    assert rules["global"]["override"][0]["enabled"] is True
    # Nothing new after it.
    quiet = await sync_since(client, alice, response["next_batch"])
    assert global_account_data(quiet, "m.push_rules") is None
    # A later initial sync shows the current rules too.
    rules = global_account_data(await sync_since(client, alice), "m.push_rules")
    assert rules is not None
    assert rules["global"]["override"][0]["enabled"] is True
