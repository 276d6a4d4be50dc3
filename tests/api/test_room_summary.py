"""Room previews on one server, over HTTP on every backend (Client-Server API, GET
/_matrix/client/v1/room_summary/{roomIdOrAlias}, MSC3266 and its unstable paths): who may
see a summary, what it holds, the requester's membership, and the spec's errors."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response
from harness.rooms import create_room

_names = itertools.count()
_STABLE = "/_matrix/client/v1/room_summary"
_UNSTABLE = "/_matrix/client/unstable/im.nheko.summary"


async def summary(
    client: MatrixClient, room: str, account: Account | None, *, path: str = _STABLE
) -> Response:
    url = f"{path}/{quote(room, safe='')}"
    if path == f"{_UNSTABLE}/rooms":
        url += "/summary"
    return await client.request("GET", url, token=account)


def assert_not_found(response: Response) -> None:
    assert response.status == 404, response.body
    assert response.body["errcode"] == "M_NOT_FOUND"


def state_event(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "state_key": "", "content": content}


async def test_public_room_summary_for_everyone(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    server = alice.user_id.split(":", 1)[1]
    name = f"summary{next(_names)}"
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        name="Cheese",
        topic="Tasty",
        room_alias_name=name,
        creation_content={"type": "m.space"},
        initial_state=[
            state_event("m.room.avatar", {"url": "mxc://example.org/cheese"}),
            state_event("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
        ],
    )
    expected = {
        "room_id": room_id,
        "name": "Cheese",
        "topic": "Tasty",
        "canonical_alias": f"#{name}:{server}",
        "avatar_url": "mxc://example.org/cheese",
        "num_joined_members": 1,
        "join_rule": "public",
        "world_readable": False,
        "guest_can_join": False,
        "room_type": "m.space",
        "encryption": "m.megolm.v1.aes-sha2",
    }
    own = (await summary(client, room_id, alice)).ok()
    assert own.pop("room_version") in ("10", "11", "12")
    assert own == {**expected, "membership": "join"}
    # A non-member, by alias, on every path; unauthenticated without membership.
    for path in (_STABLE, f"{_UNSTABLE}/summary", f"{_UNSTABLE}/rooms"):
        other = (await summary(client, f"#{name}:{server}", bob, path=path)).ok()
        assert other["room_id"] == room_id and other["membership"] == "leave", path
    anonymous = (await summary(client, room_id, None)).ok()
    assert "membership" not in anonymous and anonymous["name"] == "Cheese"


async def test_private_room_only_for_members_and_invitees(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="private_chat", name="Secret")
    assert_not_found(await summary(client, room_id, bob))
    assert_not_found(await summary(client, room_id, None))
    invite = {"user_id": bob.user_id}
    (await client.request("POST", f"rooms/{quote(room_id)}/invite", json=invite, token=alice)).ok()
    invited = (await summary(client, room_id, bob)).ok()
    assert invited["membership"] == "invite" and invited["join_rule"] == "invite"
    assert invited["name"] == "Secret" and invited["guest_can_join"] is True


async def test_world_readable_and_knockable_rooms_for_everyone(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    readable = await create_room(
        client,
        alice,
        preset="private_chat",
        initial_state=[
            state_event("m.room.history_visibility", {"history_visibility": "world_readable"})
        ],
    )
    assert (await summary(client, readable, None)).ok()["world_readable"] is True
    knock = await create_room(
        client,
        alice,
        preset="private_chat",
        initial_state=[state_event("m.room.join_rules", {"join_rule": "knock"})],
    )
    found = (await summary(client, knock, bob)).ok()
    assert found["join_rule"] == "knock" and found["membership"] == "leave"
    assert "name" not in found  # no name event: the field is left out


async def test_restricted_room_for_members_of_allowed_rooms(client: MatrixClient) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    space = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"join/{quote(space)}", json={}, token=bob)).ok()
    allow = [{"type": "m.room_membership", "room_id": space}]
    restricted = await create_room(
        client,
        alice,
        preset="private_chat",
        initial_state=[
            state_event("m.room.join_rules", {"join_rule": "restricted", "allow": allow})
        ],
    )
    found = (await summary(client, restricted, bob)).ok()
    assert found["join_rule"] == "restricted" and found["allowed_room_ids"] == [space]
    assert_not_found(await summary(client, restricted, carol))
    assert_not_found(await summary(client, restricted, None))


async def test_bad_input_gets_the_spec_errors(client: MatrixClient) -> None:
    alice = await client.register()
    server = alice.user_id.split(":", 1)[1]
    bad = await summary(client, "neither", alice)
    assert bad.status == 400 and bad.body["errcode"] == "M_INVALID_PARAM"
    assert_not_found(await summary(client, f"#missing{next(_names)}:{server}", alice))
    unknown = await summary(client, "!unknown:example.org", alice)
    assert unknown.status == 400 and unknown.body["errcode"] == "M_MISSING_PARAM"
    # Through a server that cannot be asked (federation is off here): not found.
    via = await client.request(
        "GET", f"{_STABLE}/{quote('!unknown:example.org')}?via=example.org", token=alice
    )
    assert_not_found(via)
