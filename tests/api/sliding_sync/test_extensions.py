"""The extensions of simplified sliding sync over HTTP against a real Peyvand (MSC4186,
"Extensions"; MSC3885 to_device, MSC3884 e2ee, MSC3959 account_data, MSC3960 receipts,
MSC3961 typing), as Synapse 1.163 answers them."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess
from harness.sliding_sync import one_list, request
from harness.sync import LongPoll

_txn = itertools.count(1)


async def sliding(
    client: MatrixClient,
    account: Account,
    extensions: dict[str, Any],
    pos: str | None = None,
    *,
    lists: dict[str, Any] | None = None,
    subscriptions: dict[str, Any] | None = None,
    timeout_ms: int = 0,
) -> Response:
    """One sliding sync request of ``account`` with these extensions (and every room in a
    list, unless ``lists`` says otherwise)."""
    body: dict[str, Any] = {
        "lists": one_list(timeline_limit=1) if lists is None else lists,
        "extensions": extensions,
    }
    if subscriptions is not None:
        body["room_subscriptions"] = subscriptions
    return await request(client, account, body, pos, timeout_ms)


async def extensions_of(
    client: MatrixClient, account: Account, extensions: dict[str, Any], pos: str | None = None
) -> tuple[dict[str, Any], str]:
    """The ``extensions`` of one successful response, and its ``pos``."""
    body = (await sliding(client, account, extensions, pos)).ok()
    return body.get("extensions", {}), body["pos"]


async def room_with(client: MatrixClient, owner: Account, *members: Account) -> str:
    room_id: str = (
        await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=owner)
    ).ok()["room_id"]
    for member in members:
        (await client.request("POST", f"join/{quote(room_id)}", json={}, token=member)).ok()
    return room_id


async def send_to_device(client: MatrixClient, sender: Account, to: Account, text: str) -> None:
    messages = {"messages": {to.user_id: {to.device_id: {"text": text}}}}
    path = f"sendToDevice/m.test/t{next(_txn)}"
    (await client.request("PUT", path, json=messages, token=sender)).ok()


async def send_message(client: MatrixClient, sender: Account, room_id: str) -> str:
    path = f"rooms/{quote(room_id)}/send/m.room.message/t{next(_txn)}"
    message = {"msgtype": "m.text", "body": "hello"}
    event_id: str = (await client.request("PUT", path, json=message, token=sender)).ok()["event_id"]
    return event_id


def texts(to_device: dict[str, Any]) -> list[str]:
    return [event["content"]["text"] for event in to_device["events"]]


# to_device -------------------------------------------------------------------------------


async def test_to_device_messages_are_redelivered_until_acknowledged(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    await send_to_device(client, alice, bob, "one")
    await send_to_device(client, alice, bob, "two")

    wanted: dict[str, Any] = {"to_device": {"enabled": True}}
    first, _ = await extensions_of(client, bob, wanted)
    assert texts(first["to_device"]) == ["one", "two"]
    assert first["to_device"]["events"][0]["sender"] == alice.user_id
    assert first["to_device"]["events"][0]["type"] == "m.test"
    # Not acknowledged (no since): the same messages again.
    again, _ = await extensions_of(client, bob, wanted)
    assert texts(again["to_device"]) == ["one", "two"]

    # since = the next_batch received: delivered, so deleted.
    acked = {"to_device": {"enabled": True, "since": first["to_device"]["next_batch"]}}
    after, _ = await extensions_of(client, bob, acked)
    assert after["to_device"]["events"] == []
    gone, _ = await extensions_of(client, bob, wanted)
    assert gone["to_device"]["events"] == []

    await send_to_device(client, alice, bob, "three")
    later, _ = await extensions_of(client, bob, acked)
    assert texts(later["to_device"]) == ["three"]


async def test_to_device_limit_pages_the_inbox(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    for text in ("a", "b", "c"):
        await send_to_device(client, alice, bob, text)

    page, _ = await extensions_of(client, bob, {"to_device": {"enabled": True, "limit": 2}})
    assert texts(page["to_device"]) == ["a", "b"]
    since = page["to_device"]["next_batch"]
    rest, _ = await extensions_of(
        client, bob, {"to_device": {"enabled": True, "limit": 2, "since": since}}
    )
    assert texts(rest["to_device"]) == ["c"]


async def test_to_device_message_wakes_a_waiting_request(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    wanted: dict[str, Any] = {"to_device": {"enabled": True}}
    _, pos = await extensions_of(client, bob, wanted)
    _, pos = await extensions_of(client, bob, wanted, pos)

    poll = await LongPoll.start(sliding(client, bob, wanted, pos, timeout_ms=10_000), 10)
    poll.assert_waiting()
    await send_to_device(client, alice, bob, "wake")
    woken = (await poll.woken()).ok()
    assert texts(woken["extensions"]["to_device"]) == ["wake"]


async def test_to_device_since_from_the_future_is_an_empty_page(client: MatrixClient) -> None:
    """As Synapse: nothing sent and nothing deleted; next_batch is the since given."""
    alice, bob = await client.register(), await client.register()
    await send_to_device(client, alice, bob, "kept")
    future = "9000000000000"
    page, _ = await extensions_of(client, bob, {"to_device": {"enabled": True, "since": future}})
    assert page["to_device"] == {"next_batch": future, "events": []}
    kept, _ = await extensions_of(client, bob, {"to_device": {"enabled": True}})
    assert texts(kept["to_device"]) == ["kept"]


async def test_only_enabled_extensions_answer(client: MatrixClient) -> None:
    alice = await client.register()
    extensions, _ = await extensions_of(
        client,
        alice,
        {
            "to_device": {"enabled": False},
            "typing": {},
            "receipts": None,
            "e2ee": {"enabled": True},
            "org.example.unknown": {"enabled": True},
        },
    )
    assert set(extensions) == {"e2ee"}


# e2ee ------------------------------------------------------------------------------------


async def test_e2ee_reports_device_list_changes_and_key_counts(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    await room_with(client, alice, bob)
    wanted = {"e2ee": {"enabled": True}}

    first, pos = await extensions_of(client, alice, wanted)
    # device_lists only relative to an earlier response.
    assert "device_lists" not in first["e2ee"]
    assert first["e2ee"]["device_one_time_keys_count"].get("curve25519", 0) == 0
    assert first["e2ee"]["device_unused_fallback_key_types"] == []

    await client.login(bob.user_id)
    await client.login(carol.user_id)  # shares no room with Alice
    upload = {
        "one_time_keys": {"curve25519:A1": "key-1", "curve25519:A2": "key-2"},
        "fallback_keys": {"curve25519:F1": "fallback-1"},
    }
    (await client.request("POST", "keys/upload", json=upload, token=alice)).ok()

    second, pos = await extensions_of(client, alice, wanted, pos)
    assert second["e2ee"]["device_lists"] == {"changed": [bob.user_id], "left": []}
    assert second["e2ee"]["device_one_time_keys_count"]["curve25519"] == 2
    assert second["e2ee"]["device_unused_fallback_key_types"] == ["curve25519"]

    third, _ = await extensions_of(client, alice, wanted, pos)
    assert third["e2ee"]["device_lists"] == {"changed": [], "left": []}


async def test_e2ee_reports_users_no_longer_sharing_a_room(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await room_with(client, alice, bob)
    wanted = {"e2ee": {"enabled": True}}
    _, pos = await extensions_of(client, alice, wanted)

    (await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=bob)).ok()

    extensions, _ = await extensions_of(client, alice, wanted, pos)
    assert extensions["e2ee"]["device_lists"] == {"changed": [], "left": [bob.user_id]}


async def test_new_device_of_a_room_member_wakes_a_waiting_request(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    await room_with(client, alice, bob)
    wanted = {"e2ee": {"enabled": True}}
    _, pos = await extensions_of(client, alice, wanted)
    _, pos = await extensions_of(client, alice, wanted, pos)

    poll = await LongPoll.start(sliding(client, alice, wanted, pos, timeout_ms=10_000), 10)
    poll.assert_waiting()
    await client.login(bob.user_id)
    woken = (await poll.woken()).ok()
    assert woken["extensions"]["e2ee"]["device_lists"] == {"changed": [bob.user_id], "left": []}


async def test_a_connection_of_extensions_alone_holds_nothing(client: MatrixClient) -> None:
    """A connection with no list and no subscription (Element X's encryption sync) is
    answered at position 0, which the server does not store: it stays valid when the
    connection is started over, and carries what changed since it (Synapse's connection
    position 0). A connection that is sent rooms is stored under a number of its own."""
    alice, bob = await client.register(), await client.register()
    await room_with(client, alice, bob)
    wanted = {"e2ee": {"enabled": True}, "to_device": {"enabled": True}}
    body = {"conn_id": "encryption", "extensions": wanted}
    first = (await request(client, alice, body)).ok()
    assert first["pos"].startswith("0/")
    assert "lists" not in first and first["rooms"] == {}
    (await request(client, alice, body)).ok()  # started over: nothing held is dropped

    await client.login(bob.user_id)
    again = (await request(client, alice, body, first["pos"])).ok()
    assert again["extensions"]["e2ee"]["device_lists"] == {"changed": [bob.user_id], "left": []}
    assert again["pos"].startswith("0/")
    listed = (await request(client, alice, {**body, "lists": one_list()})).ok()
    assert not listed["pos"].startswith("0/")


# account_data ----------------------------------------------------------------------------


async def put_room_data(
    client: MatrixClient, account: Account, room_id: str, data_type: str, content: dict[str, Any]
) -> None:
    path = f"user/{quote(account.user_id)}/rooms/{quote(room_id)}/account_data/{data_type}"
    (await client.request("PUT", path, json=content, token=account)).ok()


async def put_global_data(
    client: MatrixClient, account: Account, data_type: str, content: dict[str, Any]
) -> None:
    path = f"user/{quote(account.user_id)}/account_data/{data_type}"
    (await client.request("PUT", path, json=content, token=account)).ok()


def by_type(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {event["type"]: event["content"] for event in events}


async def test_account_data_global_and_per_room(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await room_with(client, alice)
    await put_global_data(client, alice, "org.example.global", {"n": 1})
    await put_room_data(client, alice, room_id, "org.example.room", {"n": 1})
    wanted = {"account_data": {"enabled": True}}

    first, pos = await extensions_of(client, alice, wanted)
    global_data = by_type(first["account_data"]["global"])
    assert global_data["org.example.global"] == {"n": 1}
    # The push rules are part of the first response's global account data.
    assert "global" in global_data["m.push_rules"]
    assert by_type(first["account_data"]["rooms"][room_id]) == {"org.example.room": {"n": 1}}

    # Incremental: only what changed.
    await put_room_data(client, alice, room_id, "org.example.room", {"n": 2})
    second, pos = await extensions_of(client, alice, wanted, pos)
    assert second["account_data"]["global"] == []
    assert by_type(second["account_data"]["rooms"][room_id]) == {"org.example.room": {"n": 2}}

    await put_global_data(client, alice, "org.example.global", {"n": 2})
    third, _ = await extensions_of(client, alice, wanted, pos)
    assert by_type(third["account_data"]["global"]) == {"org.example.global": {"n": 2}}
    assert third["account_data"]["rooms"] == {}


async def test_account_data_room_scope(client: MatrixClient) -> None:
    alice = await client.register()
    subscribed = await room_with(client, alice)
    # The newer room: the only one in a window of one room.
    listed = await room_with(client, alice)
    for room_id in (listed, subscribed):
        await put_room_data(client, alice, room_id, "org.example.room", {"room": room_id})
    only_listed = {"a": one_list(0, timeline_limit=1)["all"]}
    subscriptions = {subscribed: {"timeline_limit": 1, "required_state": []}}

    async def rooms_for(scope: dict[str, Any], lists: dict[str, Any]) -> set[str]:
        body = (
            await sliding(
                client,
                alice,
                {"account_data": {"enabled": True, **scope}},
                lists=lists,
                subscriptions=subscriptions,
            )
        ).ok()
        return set(body["extensions"]["account_data"]["rooms"])

    # Defaults ("*" for both): the list's rooms and the subscription.
    assert await rooms_for({}, only_listed) == {listed, subscribed}
    assert await rooms_for({"lists": [], "rooms": [subscribed]}, only_listed) == {subscribed}
    assert await rooms_for({"lists": ["a"], "rooms": None}, only_listed) == {listed}
    assert await rooms_for({"lists": ["other"], "rooms": []}, only_listed) == set()
    # No list: only the subscription.
    assert await rooms_for({"lists": ["*"], "rooms": ["*"]}, {}) == {subscribed}


async def test_a_room_entering_the_window_brings_its_account_data_and_receipts(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    older = await room_with(client, alice, bob)
    await put_room_data(client, alice, older, "org.example.room", {"n": 1})
    event_id = await send_message(client, alice, older)
    receipt_path = f"rooms/{quote(older)}/receipt/m.read/{quote(event_id)}"
    (await client.request("POST", receipt_path, json={}, token=bob)).ok()
    newer = await room_with(client, alice)
    # Room new to the connection: the receipts on its timeline's events (as Synapse).
    top_room = {"top": one_list(0, timeline_limit=2)["all"]}
    wanted = {"account_data": {"enabled": True}, "receipts": {"enabled": True}}

    first = (await sliding(client, alice, wanted, lists=top_room)).ok()
    assert first["lists"]["top"]["ops"][0]["room_ids"] == [newer]
    assert older not in first["extensions"]["account_data"]["rooms"]
    assert older not in first["extensions"]["receipts"]["rooms"]

    # A message moves the older room to the top: new to the connection, it comes with
    # what was set before, not only what changed since the last response.
    await send_message(client, bob, older)
    second = (await sliding(client, alice, wanted, first["pos"], lists=top_room)).ok()
    assert second["rooms"][older]["initial"] is True
    extensions = second["extensions"]
    assert by_type(extensions["account_data"]["rooms"][older]) == {"org.example.room": {"n": 1}}
    assert bob.user_id in extensions["receipts"]["rooms"][older]["content"][event_id]["m.read"]


async def test_a_room_back_in_view_gets_the_account_data_and_receipts_it_missed(
    client: MatrixClient,
) -> None:
    """Synapse's ``HaveSentRoom``: a room sent before, changed while out of the window,
    gets those changes when it comes back (not ``initial``, not only what changed since
    the previous response)."""
    alice, bob = await client.register(), await client.register()
    older = await room_with(client, alice, bob)
    newer = await room_with(client, alice)
    # (From account data position 0, every response carries m.push_rules.)
    await put_global_data(client, alice, "org.example.first", {})
    top_room = {"top": one_list(0, timeline_limit=1)["all"]}
    wanted = {"account_data": {"enabled": True}, "receipts": {"enabled": True}}

    first = (await sliding(client, alice, wanted, lists=top_room)).ok()
    event_id = await send_message(client, bob, older)
    shown = (await sliding(client, alice, wanted, first["pos"], lists=top_room)).ok()
    assert shown["rooms"][older]["initial"] is True
    await send_message(client, alice, newer)
    away = (await sliding(client, alice, wanted, shown["pos"], lists=top_room)).ok()
    assert away["lists"]["top"]["ops"][0]["room_ids"] == [newer]

    # Out of view, the older room gets account data and a receipt: they neither end a
    # waiting request nor are sent at its timeout...
    started = time.monotonic()
    poll = asyncio.create_task(
        sliding(client, alice, wanted, away["pos"], lists=top_room, timeout_ms=2_000)
    )
    await asyncio.sleep(0.3)
    assert not poll.done()
    await put_room_data(client, alice, older, "org.example.missed", {"n": 2})
    receipt_path = f"rooms/{quote(older)}/receipt/m.read/{quote(event_id)}"
    (await client.request("POST", receipt_path, json={}, token=bob)).ok()
    await asyncio.sleep(0.5)
    assert not poll.done()
    quiet = (await asyncio.wait_for(poll, 10)).ok()
    assert time.monotonic() - started >= 2
    assert older not in quiet["extensions"]["account_data"]["rooms"]
    assert older not in quiet["extensions"]["receipts"]["rooms"]
    await put_global_data(client, alice, "org.example.later", {})
    later = (await sliding(client, alice, wanted, quiet["pos"], lists=top_room)).ok()
    assert older not in later["extensions"]["account_data"]["rooms"]

    # ...but when it comes back into the window.
    await send_message(client, bob, older)
    back = (await sliding(client, alice, wanted, later["pos"], lists=top_room)).ok()
    assert "initial" not in back["rooms"][older]
    extensions = back["extensions"]
    assert by_type(extensions["account_data"]["rooms"][older]) == {"org.example.missed": {"n": 2}}
    assert bob.user_id in extensions["receipts"]["rooms"][older]["content"][event_id]["m.read"]
    # Once sent, it is up to date: nothing again.
    again = (await sliding(client, alice, wanted, back["pos"], lists=top_room)).ok()
    assert older not in again["extensions"]["account_data"]["rooms"]
    assert older not in again["extensions"]["receipts"]["rooms"]


async def test_account_data_wakes_a_waiting_request(client: MatrixClient) -> None:
    alice = await client.register()
    wanted = {"account_data": {"enabled": True}}
    _, pos = await extensions_of(client, alice, wanted)

    poll = await LongPoll.start(sliding(client, alice, wanted, pos, timeout_ms=10_000), 10)
    poll.assert_waiting()
    await put_global_data(client, alice, "org.example.global", {"woken": True})
    woken = (await poll.woken()).ok()
    assert by_type(woken["extensions"]["account_data"]["global"]) == {
        "org.example.global": {"woken": True}
    }


async def test_a_first_write_on_a_new_server_is_no_initial_response(
    private_homeserver: HomeserverProcess,
) -> None:
    """On a server where no account data was ever written, a ``pos`` carries account
    data position 0; the response after the first write is still incremental: the new
    event alone, not every account data event again with ``m.push_rules`` (as /sync)."""
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice = await client.register()
        wanted = {"account_data": {"enabled": True}}
        first, pos = await extensions_of(client, alice, wanted)
        assert "m.push_rules" in by_type(first["account_data"]["global"])
        token = (await client.request("GET", "sync", token=alice)).ok()["next_batch"]

        await put_global_data(client, alice, "org.example.first", {"n": 1})
        after, _ = await extensions_of(client, alice, wanted, pos)
        assert by_type(after["account_data"]["global"]) == {"org.example.first": {"n": 1}}
        params = {"since": token, "timeout": "0"}
        synced = (await client.request("GET", "sync", token=alice, params=params)).ok()
        assert [e["type"] for e in synced["account_data"]["events"]] == ["org.example.first"]


# receipts and typing ---------------------------------------------------------------------


async def test_receipts_and_typing_of_rooms_in_a_list(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await room_with(client, alice, bob)
    wanted = {"receipts": {"enabled": True}, "typing": {"enabled": True}}
    _, pos = await extensions_of(client, alice, wanted)

    event_id = await send_message(client, alice, room_id)
    receipt_path = f"rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
    (await client.request("POST", receipt_path, json={}, token=bob)).ok()
    typing_path = f"rooms/{quote(room_id)}/typing/{quote(bob.user_id)}"
    typing = {"typing": True, "timeout": 30_000}
    (await client.request("PUT", typing_path, json=typing, token=bob)).ok()

    extensions, pos = await extensions_of(client, alice, wanted, pos)
    receipt = extensions["receipts"]["rooms"][room_id]
    assert receipt["type"] == "m.receipt"
    assert set(receipt["content"][event_id]["m.read"]) == {bob.user_id}
    assert extensions["typing"]["rooms"][room_id] == {
        "type": "m.typing",
        "content": {"user_ids": [bob.user_id]},
    }

    # Nothing new: empty, but the enabled extensions are still there.
    quiet, _ = await extensions_of(client, alice, wanted, pos)
    assert quiet["receipts"] == {"rooms": {}}
    assert quiet["typing"] == {"rooms": {}}


async def test_private_receipts_only_to_their_owner(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await room_with(client, alice, bob)
    event_id = await send_message(client, alice, room_id)
    receipt_path = f"rooms/{quote(room_id)}/receipt/m.read.private/{quote(event_id)}"
    (await client.request("POST", receipt_path, json={}, token=bob)).ok()

    wanted = {"receipts": {"enabled": True}}
    bobs, _ = await extensions_of(client, bob, wanted)
    assert set(bobs["receipts"]["rooms"][room_id]["content"][event_id]) == {"m.read.private"}
    alices, _ = await extensions_of(client, alice, wanted)
    assert room_id not in alices["receipts"]["rooms"]


async def test_receipts_and_typing_outside_the_scope_are_left_out(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await room_with(client, alice, bob)
    typing_path = f"rooms/{quote(room_id)}/typing/{quote(bob.user_id)}"
    typing = {"typing": True, "timeout": 30_000}
    (await client.request("PUT", typing_path, json=typing, token=bob)).ok()

    in_scope, _ = await extensions_of(client, alice, {"typing": {"enabled": True}})
    assert in_scope["typing"]["rooms"][room_id]["content"]["user_ids"] == [bob.user_id]
    out_of_scope, _ = await extensions_of(
        client, alice, {"typing": {"enabled": True, "lists": ["elsewhere"]}}
    )
    assert out_of_scope["typing"] == {"rooms": {}}


# bad bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extensions", "errcode"),
    [
        ({"to_device": True}, "M_BAD_JSON"),
        ({"to_device": {"enabled": "yes"}}, "M_BAD_JSON"),
        ({"to_device": {"enabled": True, "since": 5}}, "M_BAD_JSON"),
        ({"to_device": {"enabled": True, "since": "five"}}, "M_INVALID_PARAM"),
        ({"to_device": {"enabled": True, "limit": "5"}}, "M_BAD_JSON"),
        ({"to_device": {"enabled": True, "limit": True}}, "M_BAD_JSON"),
        ({"to_device": {"enabled": True, "limit": 0}}, "M_INVALID_PARAM"),
        ({"e2ee": []}, "M_BAD_JSON"),
        ({"account_data": {"enabled": True, "lists": "*"}}, "M_BAD_JSON"),
        ({"receipts": {"enabled": True, "rooms": [1]}}, "M_BAD_JSON"),
        ({"typing": {"enabled": 1}}, "M_BAD_JSON"),
    ],
)
async def test_bad_extension_bodies_are_refused(
    client: MatrixClient, extensions: dict[str, Any], errcode: str
) -> None:
    alice = await client.register()
    response = await sliding(client, alice, extensions)
    assert response.status == 400, response.body
    assert response.body["errcode"] == errcode, response.body
