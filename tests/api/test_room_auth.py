"""Room authorization over HTTP, for room versions 10, 11 and 12 on every backend.

The auth rules themselves are unit-tested in tests/events/auth; these tests check that
the HTTP layer applies them: a refused request is 403 M_FORBIDDEN and changes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.client import Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess

ROOM_VERSIONS = ["10", "11", "12"]
_txn = itertools.count()


@dataclass(frozen=True, slots=True)
class Users:
    alice: Account  # creates the rooms (power level 100, or creator in v12)
    bob: Account  # a member with power level 50 where a test says so
    carol: Account  # a plain member or an outsider


def assert_forbidden(response: Response) -> None:
    assert response.status == 403, f"expected 403, got {response.status}: {response.body}"
    assert response.body["errcode"] == "M_FORBIDDEN", response.body


@pytest.fixture(scope="module")
async def users(homeserver: HomeserverProcess) -> AsyncIterator[Users]:
    async with new_session() as session:
        client = MatrixClient(session, homeserver.base_url)
        yield Users(await client.register(), await client.register(), await client.register())


@pytest.fixture(params=ROOM_VERSIONS)
def room_version(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


async def create_room(
    client: MatrixClient, creator: Account, room_version: str, **options: Any
) -> str:
    body = {"room_version": room_version, **options}
    room_id: str = (await client.request("POST", "createRoom", json=body, token=creator)).ok()[
        "room_id"
    ]
    return room_id


async def join(client: MatrixClient, room_id: str, account: Account) -> Response:
    return await client.request("POST", f"rooms/{room_id}/join", json={}, token=account)


async def send_text(client: MatrixClient, room_id: str, account: Account, body: str) -> Response:
    return await client.request(
        "PUT",
        f"rooms/{room_id}/send/m.room.message/t{next(_txn)}",
        json={"msgtype": "m.text", "body": body},
        token=account,
    )


async def membership_of(client: MatrixClient, room_id: str, reader: Account, user: str) -> str:
    content = await client.request(
        "GET", f"rooms/{room_id}/state/m.room.member/{user}", token=reader
    )
    membership: str = content.ok()["membership"]
    return membership


async def timeline_bodies(client: MatrixClient, room_id: str, reader: Account) -> list[str]:
    response = await client.request(
        "GET", f"rooms/{room_id}/messages", token=reader, params={"limit": "100"}
    )
    return [e["content"].get("body", "") for e in response.ok()["chunk"]]


async def test_send_without_membership(
    client: MatrixClient, users: Users, room_version: str
) -> None:
    room_id = await create_room(client, users.alice, room_version, preset="public_chat")
    refused = await send_text(client, room_id, users.carol, "not a member")
    assert_forbidden(refused)
    # After leaving, sending is refused again.
    (await join(client, room_id, users.carol)).ok()
    (await send_text(client, room_id, users.carol, "member now")).ok()
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=users.carol)).ok()
    assert_forbidden(await send_text(client, room_id, users.carol, "left"))
    bodies = await timeline_bodies(client, room_id, users.alice)
    assert "member now" in bodies
    assert "not a member" not in bodies and "left" not in bodies


async def test_kick_needs_a_higher_power_level(
    client: MatrixClient, users: Users, room_version: str
) -> None:
    alice, bob, carol = users.alice, users.bob, users.carol
    # The override replaces "users" whole; v12 creators have no entry (infinite level).
    levels = {bob.user_id: 50} if room_version == "12" else {alice.user_id: 100, bob.user_id: 50}
    room_id = await create_room(
        client,
        alice,
        room_version,
        preset="public_chat",
        power_level_content_override={"users": levels, "kick": 50},
    )
    for account in (bob, carol):
        (await join(client, room_id, account)).ok()
    # Power level 0 may not kick; 50 may not kick the creator (100, or infinite in v12).
    refused = await client.request(
        "POST", f"rooms/{room_id}/kick", json={"user_id": bob.user_id}, token=carol
    )
    assert_forbidden(refused)
    refused = await client.request(
        "POST", f"rooms/{room_id}/kick", json={"user_id": alice.user_id}, token=bob
    )
    assert_forbidden(refused)
    assert await membership_of(client, room_id, alice, bob.user_id) == "join"
    assert await membership_of(client, room_id, alice, alice.user_id) == "join"
    # A higher level kicks a lower one.
    kicked = await client.request(
        "POST", f"rooms/{room_id}/kick", json={"user_id": carol.user_id, "reason": "x"}, token=bob
    )
    kicked.ok()
    assert await membership_of(client, room_id, alice, carol.user_id) == "leave"
    kicked = await client.request(
        "POST", f"rooms/{room_id}/kick", json={"user_id": bob.user_id}, token=alice
    )
    kicked.ok()
    assert await membership_of(client, room_id, alice, bob.user_id) == "leave"


async def test_state_event_without_permission(
    client: MatrixClient, users: Users, room_version: str
) -> None:
    alice, carol = users.alice, users.carol
    room_id = await create_room(client, alice, room_version, preset="public_chat", name="Old")
    (await join(client, room_id, carol)).ok()
    for event_type, content in (
        ("m.room.name", {"name": "New"}),
        ("m.room.power_levels", {"users": {carol.user_id: 100}}),
        ("m.room.join_rules", {"join_rule": "invite"}),
    ):
        refused = await client.request(
            "PUT", f"rooms/{room_id}/state/{event_type}", json=content, token=carol
        )
        assert_forbidden(refused)
    name = await client.request("GET", f"rooms/{room_id}/state/m.room.name", token=carol)
    assert name.ok() == {"name": "Old"}
    rules = await client.request("GET", f"rooms/{room_id}/state/m.room.join_rules", token=carol)
    assert rules.ok()["join_rule"] == "public"
    # The creator may.
    renamed = await client.request(
        "PUT", f"rooms/{room_id}/state/m.room.name", json={"name": "New"}, token=alice
    )
    renamed.ok()


async def test_join_after_ban(client: MatrixClient, users: Users, room_version: str) -> None:
    alice, carol = users.alice, users.carol
    room_id = await create_room(client, alice, room_version, preset="public_chat")
    (await join(client, room_id, carol)).ok()
    banned = await client.request(
        "POST", f"rooms/{room_id}/ban", json={"user_id": carol.user_id}, token=alice
    )
    banned.ok()
    assert await membership_of(client, room_id, alice, carol.user_id) == "ban"
    assert_forbidden(await join(client, room_id, carol))
    assert_forbidden(await client.request("POST", f"join/{room_id}", json={}, token=carol))
    # An invite does not lift a ban either.
    assert_forbidden(
        await client.request(
            "POST", f"rooms/{room_id}/invite", json={"user_id": carol.user_id}, token=alice
        )
    )
    assert await membership_of(client, room_id, alice, carol.user_id) == "ban"
    (
        await client.request(
            "POST", f"rooms/{room_id}/unban", json={"user_id": carol.user_id}, token=alice
        )
    ).ok()
    (await join(client, room_id, carol)).ok()


async def test_join_invite_only_room_uninvited(
    client: MatrixClient, users: Users, room_version: str
) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, room_version, preset="private_chat")
    assert_forbidden(await join(client, room_id, bob))
    joined = (await client.request("GET", "joined_rooms", token=bob)).ok()["joined_rooms"]
    assert room_id not in joined
    (
        await client.request(
            "POST", f"rooms/{room_id}/invite", json={"user_id": bob.user_id}, token=alice
        )
    ).ok()
    (await join(client, room_id, bob)).ok()


async def test_invite_by_non_member(client: MatrixClient, users: Users, room_version: str) -> None:
    alice, bob, carol = users.alice, users.bob, users.carol
    room_id = await create_room(client, alice, room_version, preset="public_chat")
    refused = await client.request(
        "POST", f"rooms/{room_id}/invite", json={"user_id": carol.user_id}, token=bob
    )
    assert_forbidden(refused)
    members = await client.request("GET", f"rooms/{room_id}/members", token=alice)
    assert carol.user_id not in {e["state_key"] for e in members.ok()["chunk"]}


async def test_redact_another_users_event_needs_redact_level(
    client: MatrixClient, users: Users, room_version: str
) -> None:
    alice, carol = users.alice, users.carol
    room_id = await create_room(client, alice, room_version, preset="public_chat")
    (await join(client, room_id, carol)).ok()
    from_alice = (await send_text(client, room_id, alice, "alice says")).ok()["event_id"]
    from_carol = (await send_text(client, room_id, carol, "carol says")).ok()["event_id"]
    refused = await client.request(
        "PUT", f"rooms/{room_id}/redact/{from_alice}/t{next(_txn)}", json={}, token=carol
    )
    assert_forbidden(refused)
    event = await client.request("GET", f"rooms/{room_id}/event/{from_alice}", token=carol)
    assert event.ok()["content"]["body"] == "alice says"
    # Anyone may redact their own event; the room's redact level may redact others'.
    for target, redactor in ((from_carol, carol), (from_alice, alice)):
        path = f"rooms/{room_id}/redact/{target}/t{next(_txn)}"
        (await client.request("PUT", path, json={}, token=redactor)).ok()
        event = await client.request("GET", f"rooms/{room_id}/event/{target}", token=alice)
        assert event.ok()["content"] == {}
