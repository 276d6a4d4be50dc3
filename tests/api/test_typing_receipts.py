"""Typing notifications, receipts and read markers over HTTP against a real Peyvand, as
seen through /sync (Client-Server API, "Typing Notifications", "Receipts", "Read and
unread markers")."""

from __future__ import annotations

from typing import Any

from harness.client import MatrixClient, Response
from harness.rooms import say, shared_room
from harness.sync import LongPoll, sync_since


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


def ephemeral(response: dict[str, Any], room_id: str, event_type: str) -> dict[str, Any] | None:
    room = response.get("rooms", {}).get("join", {}).get(room_id, {})
    for event in room.get("ephemeral", {}).get("events", []):
        if event["type"] == event_type:
            found: dict[str, Any] = event
            return found
    return None


# Typing ---------------------------------------------------------------------------------


async def test_typing_appears_in_sync_and_stops(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    token = (await sync_since(client, bob))["next_batch"]
    typing = f"rooms/{room_id}/typing/{alice.user_id}"
    (await client.request("PUT", typing, json={"typing": True, "timeout": 30000}, token=alice)).ok()
    response = await sync_since(client, bob, token)
    assert ephemeral(response, room_id, "m.typing") == {
        "type": "m.typing",
        "content": {"user_ids": [alice.user_id]},
    }
    token = response["next_batch"]
    (await client.request("PUT", typing, json={"typing": False}, token=alice)).ok()
    response = await sync_since(client, bob, token)
    assert ephemeral(response, room_id, "m.typing") == {
        "type": "m.typing",
        "content": {"user_ids": []},
    }


async def test_typing_wakes_a_waiting_sync(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    token = (await sync_since(client, bob))["next_batch"]
    waiting = await LongPoll.start(sync_since(client, bob, token, timeout_ms=20_000), 20)
    typing = f"rooms/{room_id}/typing/{alice.user_id}"
    waiting.assert_waiting()
    (await client.request("PUT", typing, json={"typing": True, "timeout": 5000}, token=alice)).ok()
    response = await waiting.woken()
    assert ephemeral(response, room_id, "m.typing") == {
        "type": "m.typing",
        "content": {"user_ids": [alice.user_id]},
    }


async def test_typing_expires_after_its_timeout(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    typing = f"rooms/{room_id}/typing/{alice.user_id}"
    (await client.request("PUT", typing, json={"typing": True, "timeout": 1500}, token=alice)).ok()
    before = await sync_since(client, bob)
    # Still typing at the token: the expiry is what wakes the waiting sync.
    assert ephemeral(before, room_id, "m.typing") == {
        "type": "m.typing",
        "content": {"user_ids": [alice.user_id]},
    }
    waiting = await LongPoll.start(
        sync_since(client, bob, before["next_batch"], timeout_ms=10_000), 10
    )
    waiting.assert_waiting()
    response = await waiting.woken()
    assert ephemeral(response, room_id, "m.typing") == {
        "type": "m.typing",
        "content": {"user_ids": []},
    }


async def test_typing_errors(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    outsider = await client.register()
    body = {"typing": True, "timeout": 1000}
    as_other = await client.request(
        "PUT", f"rooms/{room_id}/typing/{alice.user_id}", json=body, token=bob
    )
    assert_error(as_other, 403, "M_FORBIDDEN")
    not_joined = await client.request(
        "PUT", f"rooms/{room_id}/typing/{outsider.user_id}", json=body, token=outsider
    )
    assert_error(not_joined, 403, "M_FORBIDDEN")
    missing = await client.request(
        "PUT", f"rooms/{room_id}/typing/{alice.user_id}", json={"timeout": 5}, token=alice
    )
    assert_error(missing, 400, "M_MISSING_PARAM")


# Receipts -------------------------------------------------------------------------------


async def test_read_receipts_reach_other_members_and_private_ones_stay_private(
    client: MatrixClient,
) -> None:
    alice, bob, room_id = await shared_room(client)
    event_id = await say(client, room_id, alice, "hello")
    bob_token = (await sync_since(client, bob))["next_batch"]
    alice_token = (await sync_since(client, alice))["next_batch"]

    (await client.request("POST", f"rooms/{room_id}/receipt/m.read/{event_id}", token=bob)).ok()
    (
        await client.request(
            "POST", f"rooms/{room_id}/receipt/m.read.private/{event_id}", json={}, token=alice
        )
    ).ok()

    receipts = ephemeral(await sync_since(client, alice, alice_token), room_id, "m.receipt")
    assert receipts is not None
    content = receipts["content"][event_id]
    assert set(content) == {"m.read", "m.read.private"}
    assert set(content["m.read"]) == {bob.user_id}
    assert isinstance(content["m.read"][bob.user_id]["ts"], int)
    assert "thread_id" not in content["m.read"][bob.user_id]
    assert set(content["m.read.private"]) == {alice.user_id}

    receipts = ephemeral(await sync_since(client, bob, bob_token), room_id, "m.receipt")
    assert receipts is not None
    assert receipts["content"] == {
        event_id: {"m.read": {bob.user_id: content["m.read"][bob.user_id]}}
    }
    # An initial sync carries the current receipts too.
    initial = ephemeral(await sync_since(client, bob), room_id, "m.receipt")
    assert initial is not None
    assert initial["content"] == receipts["content"]


async def test_a_receipt_wakes_a_waiting_sync(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    event_id = await say(client, room_id, alice, "read me")
    token = (await sync_since(client, alice))["next_batch"]
    waiting = await LongPoll.start(sync_since(client, alice, token, timeout_ms=10_000), 10)
    waiting.assert_waiting()
    (await client.request("POST", f"rooms/{room_id}/receipt/m.read/{event_id}", token=bob)).ok()
    receipts = ephemeral(await waiting.woken(), room_id, "m.receipt")
    assert receipts is not None
    assert set(receipts["content"][event_id]["m.read"]) == {bob.user_id}


async def test_a_room_joined_since_the_token_brings_its_current_receipts_and_typing(
    client: MatrixClient,
) -> None:
    alice, bob, room_id = await shared_room(client)
    event_id = await say(client, room_id, alice, "before carol")
    (await client.request("POST", f"rooms/{room_id}/receipt/m.read/{event_id}", token=bob)).ok()
    typing = f"rooms/{room_id}/typing/{alice.user_id}"
    (await client.request("PUT", typing, json={"typing": True, "timeout": 30000}, token=alice)).ok()
    carol = await client.register()
    token = (await sync_since(client, carol))["next_batch"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=carol)).ok()
    response = await sync_since(client, carol, token)
    receipts = ephemeral(response, room_id, "m.receipt")
    assert receipts is not None
    assert bob.user_id in receipts["content"][event_id]["m.read"]
    assert ephemeral(response, room_id, "m.typing") == {
        "type": "m.typing",
        "content": {"user_ids": [alice.user_id]},
    }


async def test_threaded_receipt_on_the_main_timeline(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    event_id = await say(client, room_id, alice, "hello")
    token = (await sync_since(client, alice))["next_batch"]
    receipt = f"rooms/{room_id}/receipt/m.read/{event_id}"
    (await client.request("POST", receipt, json={"thread_id": "main"}, token=bob)).ok()
    receipts = ephemeral(await sync_since(client, alice, token), room_id, "m.receipt")
    assert receipts is not None
    assert receipts["content"][event_id]["m.read"][bob.user_id]["thread_id"] == "main"


async def test_receipt_errors(client: MatrixClient) -> None:
    alice, _, room_id = await shared_room(client)
    outsider = await client.register()
    event_id = await say(client, room_id, alice, "hello")
    base = f"rooms/{room_id}/receipt"
    unknown_type = await client.request("POST", f"{base}/m.seen/{event_id}", json={}, token=alice)
    assert_error(unknown_type, 400, "M_INVALID_PARAM")
    for thread_id in ("", 5):
        bad_thread = await client.request(
            "POST", f"{base}/m.read/{event_id}", json={"thread_id": thread_id}, token=alice
        )
        assert_error(bad_thread, 400, "M_INVALID_PARAM")
    fully_read_thread = await client.request(
        "POST", f"{base}/m.fully_read/{event_id}", json={"thread_id": "main"}, token=alice
    )
    assert_error(fully_read_thread, 400, "M_INVALID_PARAM")
    unrelated_thread = await client.request(
        "POST", f"{base}/m.read/{event_id}", json={"thread_id": "$elsewhere"}, token=alice
    )
    assert_error(unrelated_thread, 400, "M_INVALID_PARAM")
    unknown_event = await client.request(
        "POST", f"{base}/m.read/$unknown:localhost", json={}, token=alice
    )
    assert_error(unknown_event, 404, "M_NOT_FOUND")
    not_member = await client.request("POST", f"{base}/m.read/{event_id}", json={}, token=outsider)
    assert_error(not_member, 403, "M_FORBIDDEN")


# Read markers ---------------------------------------------------------------------------


async def test_read_markers_set_fully_read_account_data_and_receipts(
    client: MatrixClient,
) -> None:
    alice, bob, room_id = await shared_room(client)
    first = await say(client, room_id, alice, "one")
    second = await say(client, room_id, alice, "two")
    token = (await sync_since(client, bob))["next_batch"]
    markers = {"m.fully_read": second, "m.read": first, "m.read.private": second}
    (await client.request("POST", f"rooms/{room_id}/read_markers", json=markers, token=bob)).ok()

    response = await sync_since(client, bob, token)
    room = response["rooms"]["join"][room_id]
    assert {"type": "m.fully_read", "content": {"event_id": second}} in room["account_data"][
        "events"
    ]
    receipts = ephemeral(response, room_id, "m.receipt")
    assert receipts is not None
    assert set(receipts["content"][first]) == {"m.read"}
    assert set(receipts["content"][second]) == {"m.read.private"}
    fully_read = await client.request(
        "GET", f"user/{bob.user_id}/rooms/{room_id}/account_data/m.fully_read", token=bob
    )
    assert fully_read.ok() == {"event_id": second}

    # The marker only moves forward, also through /receipt/m.fully_read.
    back = f"rooms/{room_id}/receipt/m.fully_read/{first}"
    (await client.request("POST", back, json={}, token=bob)).ok()
    fully_read = await client.request(
        "GET", f"user/{bob.user_id}/rooms/{room_id}/account_data/m.fully_read", token=bob
    )
    assert fully_read.ok() == {"event_id": second}
