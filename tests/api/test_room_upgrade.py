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
