"""Send-to-device messaging over HTTP against a real Peyvand (Client-Server API,
"Send-to-Device messaging"): delivery through /sync, exactly once, acknowledgement by the
next token, idempotent transaction IDs, paging, limits and crash safety."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from harness.client import Account, MatrixClient, Response, new_session, unique_localpart
from harness.server import HomeserverProcess
from harness.sync import LongPoll, sync_since
from peyvand.types import UserID

TYPE = "org.example.ping"


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


def to_device(response: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = response["to_device"]["events"]
    return events


async def send(
    client: MatrixClient,
    sender: Account,
    messages: Mapping[UserID, dict[str, Any]],
    txn_id: str,
    event_type: str = TYPE,
) -> Response:
    return await client.request(
        "PUT", f"sendToDevice/{event_type}/{txn_id}", json={"messages": messages}, token=sender
    )


async def test_message_to_one_device_is_delivered_once(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    bob_other = await client.login(bob.user_id)
    token = (await sync_since(client, bob))["next_batch"]
    other_token = (await sync_since(client, bob_other))["next_batch"]

    (await send(client, alice, {bob.user_id: {bob.device_id: {"n": 1}}}, "t1")).ok()

    first = await sync_since(client, bob, token)
    assert to_device(first) == [{"type": TYPE, "sender": alice.user_id, "content": {"n": 1}}]
    # The next token acknowledges it: never again.
    second = await sync_since(client, bob, first["next_batch"])
    assert to_device(second) == []
    assert to_device(await sync_since(client, bob)) == []
    # Only the addressed device got it.
    assert to_device(await sync_since(client, bob_other, other_token)) == []


async def test_wildcard_reaches_every_device_and_explicit_device_wins(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    bob2 = await client.login(bob.user_id)
    tokens = {d.device_id: (await sync_since(client, d))["next_batch"] for d in (bob, bob2)}

    messages = {bob.user_id: {"*": {"to": "all"}, bob2.device_id: {"to": "bob2"}}}
    (await send(client, alice, messages, "wild")).ok()

    got_bob = to_device(await sync_since(client, bob, tokens[bob.device_id]))
    got_bob2 = to_device(await sync_since(client, bob2, tokens[bob2.device_id]))
    assert [e["content"] for e in got_bob] == [{"to": "all"}]
    assert [e["content"] for e in got_bob2] == [{"to": "bob2"}]


async def test_not_deleted_until_a_later_token_is_used(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    token = (await sync_since(client, bob))["next_batch"]
    (await send(client, alice, {bob.user_id: {bob.device_id: {"n": 1}}}, "t")).ok()

    first = await sync_since(client, bob, token)
    assert len(to_device(first)) == 1
    # The response was lost: syncing again from the old token gets it again.
    again = await sync_since(client, bob, token)
    assert to_device(again) == to_device(first)
    # An initial sync also still has it, until a later token acknowledges it.
    assert to_device(await sync_since(client, bob)) == to_device(first)
    assert to_device(await sync_since(client, bob, again["next_batch"])) == []
    assert to_device(await sync_since(client, bob)) == []


async def test_order_and_paging_by_100(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    token = (await sync_since(client, bob))["next_batch"]
    for n in range(130):
        (await send(client, alice, {bob.user_id: {bob.device_id: {"n": n}}}, f"t{n}")).ok()

    first = await sync_since(client, bob, token)
    assert [e["content"]["n"] for e in to_device(first)] == list(range(100))
    second = await sync_since(client, bob, first["next_batch"])
    assert [e["content"]["n"] for e in to_device(second)] == list(range(100, 130))
    assert to_device(await sync_since(client, bob, second["next_batch"])) == []


async def test_initial_sync_pages_too(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    for n in range(105):
        (await send(client, alice, {bob.user_id: {bob.device_id: {"n": n}}}, f"i{n}")).ok()
    first = await sync_since(client, bob)
    assert [e["content"]["n"] for e in to_device(first)] == list(range(100))
    rest = await sync_since(client, bob, first["next_batch"])
    assert [e["content"]["n"] for e in to_device(rest)] == list(range(100, 105))


async def test_transaction_ids_are_idempotent(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    token = (await sync_since(client, bob))["next_batch"]
    messages = {bob.user_id: {bob.device_id: {"n": 1}}}
    first, retry = await asyncio.gather(
        send(client, alice, messages, "same"), send(client, alice, messages, "same")
    )
    assert first.ok() == {} and retry.ok() == {}
    (await send(client, alice, messages, "same")).ok()
    # Another device of the sender, or another event type, is another transaction.
    alice2 = await client.login(alice.user_id)
    (await send(client, alice2, messages, "same")).ok()
    (await send(client, alice, messages, "same", event_type="org.example.other")).ok()

    events = to_device(await sync_since(client, bob, token))
    assert [e["type"] for e in events] == [TYPE, TYPE, "org.example.other"]


async def test_sync_wakes_on_a_message(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    token = (await sync_since(client, bob))["next_batch"]
    waiting = await LongPoll.start(sync_since(client, bob, token, timeout_ms=10_000), 10)
    waiting.assert_waiting()
    (await send(client, alice, {bob.user_id: {bob.device_id: {"wake": True}}}, "w")).ok()
    response = await waiting.woken()
    assert [e["content"] for e in to_device(response)] == [{"wake": True}]


async def test_unknown_devices_users_and_remote_users_are_skipped(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    token = (await sync_since(client, bob))["next_batch"]
    server = bob.user_id.split(":", 1)[1]
    messages = {
        bob.user_id: {"NOSUCHDEVICE": {"n": 0}, bob.device_id: {"n": 1}},
        UserID(f"@{unique_localpart()}:{server}"): {"*": {"n": 2}},
        UserID("@someone:remote.example"): {"*": {"n": 3}},
    }
    (await send(client, alice, messages, "mixed")).ok()
    assert [e["content"] for e in to_device(await sync_since(client, bob, token))] == [{"n": 1}]


async def test_bad_requests(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    token = (await sync_since(client, bob))["next_batch"]
    path = f"sendToDevice/{TYPE}/bad"
    assert_error(await client.request("PUT", path, json={}, token=alice), 400, "M_MISSING_PARAM")
    bad_shapes: list[Any] = [[], {bob.user_id: []}, {bob.user_id: {bob.device_id: "text"}}]
    for messages in bad_shapes:
        response = await client.request("PUT", path, json={"messages": messages}, token=alice)
        assert_error(response, 400, "M_BAD_JSON")
    response = await client.request(
        "PUT", path, json={"messages": {"not-a-user": {"*": {}}}}, token=alice
    )
    assert_error(response, 400, "M_INVALID_PARAM")
    big = {bob.user_id: {bob.device_id: {"blob": "x" * 70_000}}}
    assert_error(await send(client, alice, big, "big"), 413, "M_TOO_LARGE")
    assert_error(await client.request("PUT", path, json={"messages": {}}), 401, "M_MISSING_TOKEN")
    # Nothing was delivered by the refused requests.
    assert to_device(await sync_since(client, bob, token)) == []


async def test_deleted_device_loses_its_inbox(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    bob2 = await client.login(bob.user_id)
    (await send(client, alice, {bob.user_id: {bob2.device_id: {"n": 1}}}, "d1")).ok()
    (await client.request("POST", "logout", json={}, token=bob2)).ok()
    assert_error(await client.request("GET", "sync", token=bob2), 401, "M_UNKNOWN_TOKEN")
    # A new login reusing the device ID starts from an empty inbox.
    relogin = (
        await client.request(
            "POST",
            "login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": bob.user_id},
                "password": bob.password,
                "device_id": bob2.device_id,
            },
        )
    ).ok()
    again = Account(bob.user_id, relogin["access_token"], bob2.device_id, bob.password)
    assert to_device(await sync_since(client, again)) == []
    # Messages to the deleted-then-recreated device flow again.
    (await send(client, alice, {bob.user_id: {bob2.device_id: {"n": 2}}}, "d2")).ok()
    assert [e["content"] for e in to_device(await sync_since(client, again))] == [{"n": 2}]


async def test_messages_survive_kill_and_acknowledgement_persists(
    private_homeserver: HomeserverProcess,
) -> None:
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice, bob = await client.register(), await client.register()
        token = (await sync_since(client, bob))["next_batch"]
        for n in range(3):
            (await send(client, alice, {bob.user_id: {bob.device_id: {"n": n}}}, f"k{n}")).ok()
        delivered = await sync_since(client, bob, token)
        assert [e["content"]["n"] for e in to_device(delivered)] == [0, 1, 2]

        private_homeserver.kill_and_restart()

        # Not acknowledged yet: delivered again from the old token.
        redelivered = to_device(await sync_since(client, bob, token))
        assert [e["content"]["n"] for e in redelivered] == [0, 1, 2]
        # A retried transaction is still recognised after the crash.
        (await send(client, alice, {bob.user_id: {bob.device_id: {"n": 0}}}, "k0")).ok()
        (await send(client, alice, {bob.user_id: {bob.device_id: {"n": 3}}}, "k3")).ok()
        later = await sync_since(client, bob, delivered["next_batch"])
        assert [e["content"]["n"] for e in to_device(later)] == [3]

        private_homeserver.kill_and_restart()

        # The acknowledgement survived, and positions never went back.
        assert to_device(await sync_since(client, bob, later["next_batch"])) == []
        assert to_device(await sync_since(client, bob)) == []
        (await send(client, alice, {bob.user_id: {bob.device_id: {"n": 4}}}, "k4")).ok()
        final = await sync_since(client, bob, later["next_batch"])
        assert [e["content"]["n"] for e in to_device(final)] == [4]
