"""POST /rooms/{roomId}/upgrade over HTTP on every backend (Client-Server API, "Room
Upgrades", "Server behaviour")."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, Response

_names = itertools.count()


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def state(client: MatrixClient, room_id: str, reader: Account) -> dict[tuple[str, str], Any]:
    events = (await client.request("GET", f"rooms/{room_id}/state", token=reader)).ok()
    return {(e["type"], e["state_key"]): e for e in events}


async def upgrade(client: MatrixClient, room_id: str, account: Account, version: str) -> Response:
    return await client.request(
        "POST", f"rooms/{room_id}/upgrade", json={"new_version": version}, token=account
    )


@pytest.mark.parametrize("new_version", ["2", "10", "12"])
async def test_upgrade_replaces_the_room(client: MatrixClient, new_version: str) -> None:
    alice, bob, mallory = [await client.register() for _ in range(3)]
    server = alice.user_id.split(":", 1)[1]
    name = f"upgrade{next(_names)}"
    alias = f"#{name}:{server}"
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={
                "preset": "public_chat",
                "visibility": "public",
                "name": "Old name",
                "topic": "Old topic",
                "room_alias_name": name,
                "creation_content": {"type": "org.example.kind"},
            },
            token=alice,
        )
    ).ok()["room_id"]
    for member in (bob, mallory):
        (await client.request("POST", f"rooms/{room_id}/join", json={}, token=member)).ok()
    ban = {"user_id": mallory.user_id, "reason": "spam"}
    (await client.request("POST", f"rooms/{room_id}/ban", json=ban, token=alice)).ok()
    rule = f"pushrules/global/room/{quote(room_id, safe='')}"
    (await client.request("PUT", rule, json={"actions": ["notify"]}, token=bob)).ok()
    tag = f"user/{bob.user_id}/rooms/{room_id}/tags/u.work"
    (await client.request("PUT", tag, json={"order": 0.5}, token=bob)).ok()
    direct = f"user/{bob.user_id}/account_data/m.direct"
    (await client.request("PUT", direct, json={alice.user_id: [room_id]}, token=bob)).ok()

    # A member without the power to send m.room.tombstone may not upgrade.
    assert_error(await upgrade(client, room_id, bob, new_version), 403, "M_FORBIDDEN")
    new_room = (await upgrade(client, room_id, alice, new_version)).ok()["replacement_room"]
    assert new_room != room_id

    old = await state(client, room_id, alice)
    tombstone = old[("m.room.tombstone", "")]
    assert tombstone["content"]["replacement_room"] == new_room
    assert old[("m.room.power_levels", "")]["content"]["events_default"] == 50
    assert old[("m.room.power_levels", "")]["content"]["invite"] == 50
    assert "alias" not in old[("m.room.canonical_alias", "")]["content"]

    new = await state(client, new_room, alice)
    create = new[("m.room.create", "")]["content"]
    assert create["room_version"] == new_version and create["type"] == "org.example.kind"
    assert create["predecessor"]["room_id"] == room_id
    if new_version != "12":
        assert create["predecessor"]["event_id"] == tombstone["event_id"]
    assert new[("m.room.name", "")]["content"] == {"name": "Old name"}
    assert new[("m.room.topic", "")]["content"]["topic"] == "Old topic"
    assert new[("m.room.join_rules", "")]["content"] == {"join_rule": "public"}
    # The old room (public_chat) had no guest access: the private_chat preset's is used.
    assert ("m.room.guest_access", "") not in old
    assert new[("m.room.guest_access", "")]["content"] == {"guest_access": "can_join"}
    assert new[("m.room.member", mallory.user_id)]["content"] == {
        "membership": "ban",
        "reason": "spam",
    }
    assert new[("m.room.canonical_alias", "")]["content"]["alias"] == alias
    levels = new[("m.room.power_levels", "")]["content"]
    if new_version != "12":
        assert levels["users"][alice.user_id] == 100
    else:
        assert alice.user_id not in levels["users"]
    resolved = await client.request("GET", f"directory/room/{quote(alias, safe='')}", token=bob)
    assert resolved.ok()["room_id"] == new_room
    listed = await client.request("GET", f"directory/list/room/{new_room}", token=alice)
    assert listed.ok() == {"visibility": "public"}
    old_listed = await client.request("GET", f"directory/list/room/{room_id}", token=alice)
    assert old_listed.ok() == {"visibility": "private"}
    # Bob's notification settings for the old room now cover the new one too.
    room_rules = (await client.request("GET", "pushrules/global/room/", token=bob)).ok()
    assert {r["rule_id"] for r in room_rules} == {room_id, new_room}
    tags = await client.request("GET", f"user/{bob.user_id}/rooms/{new_room}/tags", token=bob)
    assert tags.ok() == {"tags": {"u.work": {"order": 0.5}}}
    assert (await client.request("GET", direct, token=bob)).ok() == {
        alice.user_id: [room_id, new_room]
    }
    # Bob may join the new room; mallory stays banned.
    (await client.request("POST", f"rooms/{new_room}/join", json={}, token=bob)).ok()
    refused = await client.request("POST", f"rooms/{new_room}/join", json={}, token=mallory)
    assert_error(refused, 403, "M_FORBIDDEN")


async def test_upgrade_errors(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    unknown_version = await upgrade(client, room_id, alice, "my_bad_version")
    assert_error(unknown_version, 400, "M_UNSUPPORTED_ROOM_VERSION")
    assert_error(await upgrade(client, "!fail:unknown", alice, "10"), 404, "M_NOT_FOUND")
    # Not in the room: refused, and nothing changed.
    assert_error(await upgrade(client, room_id, bob, "10"), 403, "M_FORBIDDEN")
    assert ("m.room.tombstone", "") not in await state(client, room_id, alice)
    missing = await client.request("POST", f"rooms/{room_id}/upgrade", json={}, token=alice)
    assert_error(missing, 400, "M_MISSING_PARAM")


async def upgrade_with(
    client: MatrixClient, room_id: str, account: Account, version: str, creators: Any
) -> Response:
    body = {"new_version": version, "additional_creators": creators}
    return await client.request("POST", f"rooms/{room_id}/upgrade", json=body, token=account)


async def test_upgrade_to_v12_with_additional_creators(client: MatrixClient) -> None:
    """spec v1.16: the new room's m.room.create names the additional creators, who hold
    creator power there and are not in the copied power levels' ``users``."""
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={"preset": "public_chat", "room_version": "11"},
            token=alice,
        )
    ).ok()["room_id"]
    for member in (bob, carol):
        (await client.request("POST", f"rooms/{room_id}/join", json={}, token=member)).ok()
    levels_path = f"rooms/{room_id}/state/m.room.power_levels"
    levels = (await client.request("GET", levels_path, token=alice)).ok()
    levels["users"] |= {bob.user_id: 50, carol.user_id: 10}
    (await client.request("PUT", levels_path, json=levels, token=alice)).ok()

    response = await upgrade_with(client, room_id, alice, "12", [bob.user_id])
    new_room = response.ok()["replacement_room"]
    new = await state(client, new_room, alice)
    create = new[("m.room.create", "")]
    assert create["sender"] == alice.user_id
    assert create["content"]["additional_creators"] == [bob.user_id]
    users = new[("m.room.power_levels", "")]["content"]["users"]
    assert alice.user_id not in users and bob.user_id not in users
    assert users[carol.user_id] == 10
    # The old room is restricted by the upgrader as before.
    old_levels = (await state(client, room_id, alice))[("m.room.power_levels", "")]["content"]
    assert old_levels["events_default"] == 50

    # Bob, an additional creator, may do what only a creator may: raise carol above 100.
    for member in (bob, carol):
        (await client.request("POST", f"rooms/{new_room}/join", json={}, token=member)).ok()
    new_levels_path = f"rooms/{new_room}/state/m.room.power_levels"
    raised = {**new[("m.room.power_levels", "")]["content"]}
    raised["users"] = {**users, carol.user_id: 150}
    (await client.request("PUT", new_levels_path, json=raised, token=bob)).ok()
    # Naming a creator in `users` is refused (v12 authorization rule 10.4).
    listed = {**raised, "users": {**raised["users"], bob.user_id: 100}}
    refused = await client.request("PUT", new_levels_path, json=listed, token=bob)
    assert_error(refused, 403, "M_FORBIDDEN")


@pytest.mark.parametrize(
    ("creators", "errcode"),
    [
        ("@bob:example.org", "M_BAD_JSON"),
        ({"@bob:example.org": True}, "M_BAD_JSON"),
        ([1], "M_BAD_JSON"),
        (["bob"], "M_INVALID_PARAM"),
        ([f"@{'b' * 260}:example.org"], "M_INVALID_PARAM"),
    ],
)
async def test_upgrade_invalid_additional_creators(
    client: MatrixClient, creators: Any, errcode: str
) -> None:
    alice = await client.register()
    body = {"room_version": "11"}
    room_id = (await client.request("POST", "createRoom", json=body, token=alice)).ok()["room_id"]
    assert_error(await upgrade_with(client, room_id, alice, "12", creators), 400, errcode)
    # Refused before anything changed.
    assert ("m.room.tombstone", "") not in await state(client, room_id, alice)
    # A version without additional creators ignores the field, as Synapse.
    new_room = (await upgrade_with(client, room_id, alice, "11", creators)).ok()
    create = (await state(client, new_room["replacement_room"], alice))[("m.room.create", "")]
    assert "additional_creators" not in create["content"]


async def test_upgrade_v12_does_not_carry_additional_creators(client: MatrixClient) -> None:
    """The old room's additional creators are not copied: only those given again are."""
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={
                "preset": "public_chat",
                "room_version": "12",
                "creation_content": {"additional_creators": [bob.user_id]},
            },
            token=alice,
        )
    ).ok()["room_id"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()

    # Bob, a creator of the old room without a `users` entry, upgrades it; the old
    # room's power levels are still restricted by him.
    plain = (await upgrade(client, room_id, bob, "12")).ok()["replacement_room"]
    old = await state(client, room_id, alice)
    assert old[("m.room.tombstone", "")]["sender"] == bob.user_id
    old_levels = old[("m.room.power_levels", "")]
    assert old_levels["sender"] == bob.user_id
    assert old_levels["content"]["events_default"] == 50
    assert old_levels["content"]["invite"] == 50
    new = await state(client, plain, bob)
    assert new[("m.room.create", "")]["sender"] == bob.user_id
    assert "additional_creators" not in new[("m.room.create", "")]["content"]
    assert alice.user_id not in new[("m.room.power_levels", "")]["content"]["users"]
    # Alice is no creator of the new room: she may not change its power levels.
    (await client.request("POST", f"rooms/{plain}/join", json={}, token=alice)).ok()
    levels_path = f"rooms/{plain}/state/m.room.power_levels"
    levels = new[("m.room.power_levels", "")]["content"]
    changed = {**levels, "users": {**levels["users"], carol.user_id: 50}}
    assert_error(
        await client.request("PUT", levels_path, json=changed, token=alice), 403, "M_FORBIDDEN"
    )

    # Given again, they are creators of the next room.
    again = await upgrade_with(client, plain, bob, "12", [alice.user_id, carol.user_id])
    next_room = again.ok()["replacement_room"]
    create = (await state(client, next_room, bob))[("m.room.create", "")]
    assert create["content"]["additional_creators"] == [alice.user_id, carol.user_id]


async def test_upgrade_copies_state_in_synapses_order(client: MatrixClient) -> None:
    """The new room gets the preset's events the old room lacks, then the copied state
    in Synapse's order (join rules, history visibility, name, topic, guest access,
    avatar, encryption, server ACL), then the bans."""
    alice, mallory = await client.register(), await client.register()
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={"preset": "public_chat", "name": "Old name", "topic": "Old topic"},
            token=alice,
        )
    ).ok()["room_id"]
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=mallory)).ok()
    ban = {"user_id": mallory.user_id}
    (await client.request("POST", f"rooms/{room_id}/ban", json=ban, token=alice)).ok()
    new_room = (await upgrade(client, room_id, alice, "12")).ok()["replacement_room"]

    chunk = (
        await client.request(
            "GET", f"rooms/{new_room}/messages", params={"dir": "f", "limit": "50"}, token=alice
        )
    ).ok()["chunk"]
    types = [e["type"] for e in chunk]
    # public_chat has no guest access: the preset's comes first, before the copies.
    assert types[:9] == [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.guest_access",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
        "m.room.topic",
        "m.room.member",
    ], types
    assert chunk[8]["content"]["membership"] == "ban"
