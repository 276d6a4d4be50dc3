"""What clients write into room state, over HTTP on every backend (Client-Server API,
PUT /rooms/{roomId}/state/{eventType}/{stateKey} and "Room membership"), where Peyvand
follows Synapse: identical state is not sent twice, ``m.room.member`` through the state
endpoint (per-room display names), extra keys of a join, kicking a banned user refused,
and the aliases of ``m.room.canonical_alias`` checked."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response

_names = itertools.count()


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def create_room(client: MatrixClient, creator: Account, **body: Any) -> str:
    room_id: str = (await client.request("POST", "createRoom", json=body, token=creator)).ok()[
        "room_id"
    ]
    return room_id


async def put_state(
    client: MatrixClient, room_id: str, account: Account, path: str, content: Any
) -> Response:
    return await client.request("PUT", f"rooms/{room_id}/state/{path}", json=content, token=account)


async def member(client: MatrixClient, room_id: str, reader: Account, user_id: str) -> Any:
    path = f"rooms/{room_id}/state/m.room.member/{user_id}"
    return (await client.request("GET", path, token=reader)).ok()


async def latest_event_ids(client: MatrixClient, room_id: str, reader: Account) -> list[str]:
    page = await client.request(
        "GET", f"rooms/{room_id}/messages", token=reader, params={"dir": "b", "limit": "5"}
    )
    return [e["event_id"] for e in page.ok()["chunk"]]


async def test_identical_state_is_not_sent_again(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    first = (await put_state(client, room_id, alice, "m.room.topic", {"topic": "t"})).ok()
    before = await latest_event_ids(client, room_id, alice)
    again = (await put_state(client, room_id, alice, "m.room.topic", {"topic": "t"})).ok()
    assert again == first
    assert await latest_event_ids(client, room_id, alice) == before
    # Another content, or the same content from another sender, is a new event.
    other = (await put_state(client, room_id, alice, "m.room.topic", {"topic": "u"})).ok()
    assert other != first
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    levels = (
        await client.request("GET", f"rooms/{room_id}/state/m.room.power_levels", token=alice)
    ).ok()
    levels["events"]["m.room.topic"] = 0
    (await put_state(client, room_id, alice, "m.room.power_levels", levels)).ok()
    by_bob = (await put_state(client, room_id, bob, "m.room.topic", {"topic": "u"})).ok()
    assert by_bob != other


async def test_member_state_sets_a_per_room_display_name(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    override = {"membership": "join", "displayname": "Overridden"}
    path = f"m.room.member/{alice.user_id}"
    (await put_state(client, room_id, alice, path, override)).ok()
    assert (await member(client, room_id, alice, alice.user_id))["displayname"] == "Overridden"
    # Joining through the state endpoint keeps the display name given.
    joined = await put_state(client, room_id, bob, f"m.room.member/{bob.user_id}", override)
    assert joined.ok()["event_id"]
    assert await member(client, room_id, alice, bob.user_id) == override
    # Nobody joins for someone else, and membership must be a string.
    carol = await client.register()
    forced = await put_state(client, room_id, alice, f"m.room.member/{carol.user_id}", override)
    assert_error(forced, 403, "M_FORBIDDEN")
    bad = await put_state(client, room_id, bob, f"m.room.member/{bob.user_id}", {"membership": 1})
    assert_error(bad, 400, "M_BAD_JSON")
    # A leave of another user is a kick.
    kicked = await put_state(
        client, room_id, alice, f"m.room.member/{bob.user_id}", {"membership": "leave"}
    )
    kicked.ok()
    event = await member(client, room_id, alice, bob.user_id)
    assert event == {"membership": "leave"}


async def test_join_keeps_extra_content(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    alias_name = f"extra{next(_names)}"
    room_id = await create_room(client, alice, preset="public_chat", room_alias_name=alias_name)
    (await client.request("POST", f"join/{room_id}", json={"foo": "bar"}, token=bob)).ok()
    content = await member(client, room_id, alice, bob.user_id)
    assert content["foo"] == "bar" and content["membership"] == "join"
    alias = quote(f"#{alias_name}:{alice.user_id.split(':', 1)[1]}", safe="")
    body = {"foo": "baz", "membership": "leave"}
    (await client.request("POST", f"join/{alias}", json=body, token=carol)).ok()
    content = await member(client, room_id, alice, carol.user_id)
    # The membership itself is never taken from the body.
    assert content["foo"] == "baz" and content["membership"] == "join"


async def test_kicking_a_banned_user_is_refused(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    ban = {"user_id": bob.user_id, "reason": "spam"}
    (await client.request("POST", f"rooms/{room_id}/ban", json=ban, token=alice)).ok()
    kick = await client.request(
        "POST", f"rooms/{room_id}/kick", json={"user_id": bob.user_id}, token=alice
    )
    assert_error(kick, 403, "M_FORBIDDEN")
    assert (await member(client, room_id, alice, bob.user_id))["membership"] == "ban"
    rejoin = await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)
    assert_error(rejoin, 403, "M_FORBIDDEN")


async def test_canonical_alias_must_point_to_the_room(client: MatrixClient) -> None:
    alice = await client.register()
    server = alice.user_id.split(":", 1)[1]
    name = f"canon{next(_names)}"
    room_id = await create_room(client, alice, preset="public_chat", room_alias_name=name)
    other_name = f"other{next(_names)}"
    await create_room(client, alice, preset="public_chat", room_alias_name=other_name)
    alias, other = f"#{name}:{server}", f"#{other_name}:{server}"
    path = "m.room.canonical_alias"
    (await put_state(client, room_id, alice, path, {"alias": alias, "alt_aliases": [alias]})).ok()
    unknown = await put_state(client, room_id, alice, path, {"alias": f"#NOT-{name}:{server}"})
    assert_error(unknown, 400, "M_BAD_ALIAS")
    elsewhere = await put_state(
        client, room_id, alice, path, {"alias": alias, "alt_aliases": [other]}
    )
    assert_error(elsewhere, 400, "M_BAD_ALIAS")
    malformed = await put_state(client, room_id, alice, path, {"alias": f"%{name}:{server}"})
    assert_error(malformed, 400, "M_INVALID_PARAM")
    not_a_list = await put_state(
        client, room_id, alice, path, {"alias": alias, "alt_aliases": alias}
    )
    assert_error(not_a_list, 400, "M_INVALID_PARAM")
    # Removing aliases is never checked.
    (await put_state(client, room_id, alice, path, {})).ok()


async def test_canonical_alias_in_initial_state_must_point_to_the_new_room(
    client: MatrixClient,
) -> None:
    """createRoom's initial_state is held to the state endpoint's alias rule: only the
    alias createRoom itself makes (room_alias_name) can point to the new room."""
    alice = await client.register()
    server = alice.user_id.split(":", 1)[1]
    taken = f"taken{next(_names)}"
    await create_room(client, alice, preset="public_chat", room_alias_name=taken)
    name = f"initial{next(_names)}"
    for content, errcode in (
        ({"alias": f"#{taken}:{server}"}, "M_BAD_ALIAS"),
        ({"alias": f"#nowhere{next(_names)}:{server}"}, "M_BAD_ALIAS"),
        ({"alt_aliases": [f"#{name}:{server}", f"#{taken}:{server}"]}, "M_BAD_ALIAS"),
        ({"alias": "not-an-alias"}, "M_INVALID_PARAM"),
    ):
        refused = await client.request(
            "POST",
            "createRoom",
            {
                "room_alias_name": name,
                "initial_state": [{"type": "m.room.canonical_alias", "content": content}],
            },
            token=alice,
        )
        assert_error(refused, 400, errcode)
    own = {"alias": f"#{name}:{server}", "alt_aliases": [f"#{name}:{server}"]}
    created = await client.request(
        "POST",
        "createRoom",
        {
            "room_alias_name": name,
            "initial_state": [{"type": "m.room.canonical_alias", "content": own}],
        },
        token=alice,
    )
    room_id = created.ok()["room_id"]
    state = await client.request(
        "GET", f"rooms/{room_id}/state/m.room.canonical_alias", token=alice
    )
    assert state.ok() == own
