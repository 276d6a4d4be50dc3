"""Device list tracking over HTTP against a real Peyvand (End-to-End Encryption,
"Tracking the device list for a user"): ``device_lists`` of /sync and
``GET /keys/changes``."""

from __future__ import annotations

from typing import Any

from harness.client import Account, MatrixClient, Response
from harness.sync import LongPoll, sync_since


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def token_of(client: MatrixClient, account: Account) -> str:
    token: str = (await sync_since(client, account))["next_batch"]
    return token


def changed(response: dict[str, Any]) -> list[str]:
    users: list[str] = response["device_lists"]["changed"]
    return users


def left(response: dict[str, Any]) -> list[str]:
    users: list[str] = response["device_lists"]["left"]
    return users


async def shared_room(client: MatrixClient, owner: Account, *members: Account) -> str:
    room_id: str = (
        await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=owner)
    ).ok()["room_id"]
    for member in members:
        (await client.request("POST", f"join/{room_id}", json={}, token=member)).ok()
    return room_id


async def test_new_login_is_reported_to_users_sharing_a_room(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    await shared_room(client, alice, bob)
    alice_token, carol_token = await token_of(client, alice), await token_of(client, carol)

    await client.login(bob.user_id)

    assert bob.user_id in changed(await sync_since(client, alice, alice_token))
    # Carol shares no room with Bob: nothing for her.
    assert changed(await sync_since(client, carol, carol_token)) == []


async def test_own_new_device_is_reported_to_the_user(client: MatrixClient) -> None:
    alice = await client.register()
    token = await token_of(client, alice)
    await client.login(alice.user_id)
    assert changed(await sync_since(client, alice, token)) == [alice.user_id]


async def test_device_lists_only_in_incremental_syncs(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    await shared_room(client, alice, bob)
    response = await sync_since(client, alice)
    assert response["device_lists"] == {"changed": [], "left": []}


async def test_change_wakes_a_waiting_sync(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    await shared_room(client, alice, bob)
    token = await token_of(client, alice)
    waiting = await LongPoll.start(sync_since(client, alice, token, timeout_ms=10_000), 10)
    waiting.assert_waiting()
    await client.login(bob.user_id)
    response = await waiting.woken()
    assert changed(response) == [bob.user_id]


async def test_deleted_device_is_reported(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    bob2 = await client.login(bob.user_id)
    await shared_room(client, alice, bob)
    token = await token_of(client, alice)

    (await client.request("POST", "logout", json={}, token=bob2)).ok()

    response = await sync_since(client, alice, token)
    assert changed(response) == [bob.user_id]
    assert changed(await sync_since(client, alice, response["next_batch"])) == []


async def test_renamed_device_is_reported(client: MatrixClient) -> None:
    """A device's display name is part of its keys as others query them (Synapse reports a
    rename as a device list change too)."""
    alice, bob = await client.register(), await client.register()
    await shared_room(client, alice, bob)
    alice_token = await token_of(client, alice)
    path = f"devices/{bob.device_id}"
    (await client.request("PUT", path, json={"display_name": "wibble"}, token=bob)).ok()
    assert bob.user_id in changed(await sync_since(client, alice, alice_token))


async def test_joining_a_room_with_someone_reports_them(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = await shared_room(client, bob, carol)
    alice_token, bob_token = await token_of(client, alice), await token_of(client, bob)

    (await client.request("POST", f"join/{room_id}", json={}, token=alice)).ok()

    # Alice joined Bob's room: its members are new to her, she herself among them (as
    # Synapse: her other devices now share it with this one); Alice is new to Bob.
    expected = sorted([alice.user_id, bob.user_id, carol.user_id])
    assert sorted(changed(await sync_since(client, alice, alice_token))) == expected
    assert changed(await sync_since(client, bob, bob_token)) == [alice.user_id]
    params = {"from": alice_token, "to": await token_of(client, alice)}
    body = (await client.request("GET", "keys/changes", token=alice, params=params)).ok()
    assert body == {"changed": expected, "left": []}


async def test_a_membership_change_is_reported_only_when_it_brings_someone_in(
    client: MatrixClient,
) -> None:
    """As Synapse: a member's profile change in a shared room is no device list change
    (else every member's client fetches their keys again for a new display name); an
    invited user is reported (their devices are encrypted for), and again as they join:
    a new device of theirs while only invited was told to no one."""
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = await shared_room(client, alice, bob)
    token = await token_of(client, alice)

    path = f"rooms/{room_id}/state/m.room.member/{bob.user_id}"
    member = {"membership": "join", "displayname": "Bob B"}
    (await client.request("PUT", path, json=member, token=bob)).ok()
    (
        await client.request(
            "POST", f"rooms/{room_id}/invite", json={"user_id": carol.user_id}, token=alice
        )
    ).ok()
    response = await sync_since(client, alice, token)
    assert changed(response) == [carol.user_id]

    await client.login(carol.user_id)
    response = await sync_since(client, alice, response["next_batch"])
    assert changed(response) == []
    (await client.request("POST", f"join/{room_id}", json={}, token=carol)).ok()
    assert changed(await sync_since(client, alice, response["next_batch"])) == [carol.user_id]


async def test_the_users_own_profile_change_is_no_join(client: MatrixClient) -> None:
    """A new display name is a member event in each of the user's rooms: no room is newly
    joined by it (else every member of every room is reported changed), and a member
    leaving meanwhile is still reported."""
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    await shared_room(client, alice, bob)
    parted = await shared_room(client, alice, carol)
    token = await token_of(client, alice)

    path = f"profile/{alice.user_id}/displayname"
    (await client.request("PUT", path, json={"displayname": "Alice A"}, token=alice)).ok()
    (await client.request("POST", f"rooms/{parted}/leave", json={}, token=carol)).ok()
    response = await sync_since(client, alice, token)
    assert changed(response) == []
    assert left(response) == [carol.user_id]


async def test_an_arrival_in_one_room_stands_whatever_another_room_does(
    client: MatrixClient,
) -> None:
    """Membership changes count room by room: Carol joining Alice's room is reported
    although Carol then turns down an invite to another room of Alice's."""
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    joined = await shared_room(client, alice)
    declined = await shared_room(client, bob, alice)
    invite = {"user_id": carol.user_id}
    (await client.request("POST", f"rooms/{declined}/invite", json=invite, token=bob)).ok()
    token = await token_of(client, alice)

    (await client.request("POST", f"join/{joined}", json={}, token=carol)).ok()
    (await client.request("POST", f"rooms/{declined}/leave", json={}, token=carol)).ok()
    assert changed(await sync_since(client, alice, token)) == [carol.user_id]


async def test_leaving_the_last_shared_room_reports_left(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    first = await shared_room(client, alice, bob, carol)
    second = await shared_room(client, alice, carol)
    token = await token_of(client, alice)

    (await client.request("POST", f"rooms/{first}/leave", json={}, token=bob)).ok()
    (await client.request("POST", f"rooms/{first}/leave", json={}, token=carol)).ok()

    response = await sync_since(client, alice, token)
    # Carol still shares the second room with Alice.
    assert left(response) == [bob.user_id]
    assert changed(response) == []

    token = response["next_batch"]
    (await client.request("POST", f"rooms/{second}/leave", json={}, token=alice)).ok()
    assert left(await sync_since(client, alice, token)) == [carol.user_id]


async def test_after_leaving_changes_are_not_reported(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await shared_room(client, alice, bob)
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    token = await token_of(client, alice)
    await client.login(bob.user_id)
    assert changed(await sync_since(client, alice, token)) == []


async def test_keys_changes(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = await shared_room(client, alice, bob, carol)
    start = await token_of(client, alice)

    await client.login(bob.user_id)
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=carol)).ok()
    end = await token_of(client, alice)

    body = (
        await client.request("GET", "keys/changes", token=alice, params={"from": start, "to": end})
    ).ok()
    assert body == {"changed": [bob.user_id], "left": [carol.user_id]}
    # Between two equal tokens nothing changed.
    same = {"from": end, "to": end}
    assert (await client.request("GET", "keys/changes", token=alice, params=same)).ok() == {
        "changed": [],
        "left": [],
    }
    assert_error(
        await client.request("GET", "keys/changes", token=alice, params={"to": end}),
        400,
        "M_MISSING_PARAM",
    )
    assert_error(
        await client.request("GET", "keys/changes", token=alice, params={"from": "x", "to": end}),
        400,
        "M_INVALID_PARAM",
    )


async def test_sync_carries_the_devices_key_counts(client: MatrixClient) -> None:
    alice = await client.register()
    alice2 = await client.login(alice.user_id)
    initial = await sync_since(client, alice)
    # signed_curve25519 is always counted, 0 too, as Synapse does (the spec lets a zero
    # count be omitted or given).
    assert initial["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert initial["device_unused_fallback_key_types"] == []

    upload = {
        "one_time_keys": {"curve25519:A1": "key-1", "curve25519:A2": "key-2"},
        "fallback_keys": {"curve25519:F1": "fallback-1"},
    }
    (await client.request("POST", "keys/upload", json=upload, token=alice)).ok()

    # In incremental syncs and in the empty answer of a timed-out long-poll alike.
    for response in (
        await sync_since(client, alice, initial["next_batch"]),
        await sync_since(
            client, alice, (await sync_since(client, alice))["next_batch"], timeout_ms=10
        ),
    ):
        assert response["device_one_time_keys_count"] == {"signed_curve25519": 0, "curve25519": 2}
        assert response["device_unused_fallback_key_types"] == ["curve25519"]
    # Per device: the other device has none.
    other = await sync_since(client, alice2)
    assert other["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert other["device_unused_fallback_key_types"] == []
