"""Room aliases and the public room directory over HTTP against a real Peyvand.

Client-Server API, "Room aliases" and "Listing rooms". The session's server is shared,
so each test names its rooms with a unique word and searches for that.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response, unique_localpart


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


def alias_path(alias: str) -> str:
    return f"directory/room/{quote(alias)}"


async def create_room(client: MatrixClient, account: Account, **body: Any) -> str:
    result = (await client.request("POST", "createRoom", json=body, token=account)).ok()
    room_id: str = result["room_id"]
    return room_id


async def join(client: MatrixClient, account: Account, room: str) -> None:
    (await client.request("POST", f"join/{quote(room)}", json={}, token=account)).ok()


# Aliases ------------------------------------------------------------------------------


async def test_alias_create_resolve_conflict_delete(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    alias = f"#{unique_localpart('alias')}:localhost"
    put = await client.request("PUT", alias_path(alias), json={"room_id": room_id}, token=alice)
    assert put.ok() == {}
    resolved = (await client.request("GET", alias_path(alias))).ok()
    assert resolved == {"room_id": room_id, "servers": ["localhost"]}

    other_room = await create_room(client, alice)
    again = await client.request(
        "PUT", alias_path(alias), json={"room_id": other_room}, token=alice
    )
    assert_error(again, 409, "M_UNKNOWN")
    assert "already exists" in again.body["error"]

    aliases = (await client.request("GET", f"rooms/{room_id}/aliases", token=alice)).ok()
    assert aliases == {"aliases": [alias]}

    (await client.request("DELETE", alias_path(alias), token=alice)).ok()
    assert_error(await client.request("GET", alias_path(alias)), 404, "M_NOT_FOUND")
    assert_error(await client.request("DELETE", alias_path(alias), token=alice), 404, "M_NOT_FOUND")


async def test_alias_validation(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    body = {"room_id": room_id}
    for alias in ("#remote:elsewhere.example", "#has space:localhost", "no-sigil:localhost"):
        put = await client.request("PUT", alias_path(alias), json=body, token=alice)
        assert_error(put, 400, "M_INVALID_PARAM")
    long_alias = f"#{'a' * 250}:localhost"
    put = await client.request("PUT", alias_path(long_alias), json=body, token=alice)
    assert_error(put, 400, "M_INVALID_PARAM")
    missing = await client.request("PUT", alias_path("#x:localhost"), json={}, token=alice)
    assert_error(missing, 400, "M_MISSING_PARAM")
    unknown_room = await client.request(
        "PUT",
        alias_path(f"#{unique_localpart()}:localhost"),
        json={"room_id": "!nope:localhost"},
        token=alice,
    )
    assert_error(unknown_room, 404, "M_NOT_FOUND")
    remote = await client.request("GET", alias_path("#somewhere:elsewhere.example"))
    assert_error(remote, 404, "M_NOT_FOUND")
    assert_error(await client.request("GET", alias_path("no-sigil")), 400, "M_INVALID_PARAM")


async def test_alias_needs_membership_and_delete_needs_power(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    mallory = await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    outsider_alias = f"#{unique_localpart()}:localhost"
    put = await client.request(
        "PUT", alias_path(outsider_alias), json={"room_id": room_id}, token=bob
    )
    assert_error(put, 403, "M_FORBIDDEN")
    assert_error(
        await client.request("GET", f"rooms/{room_id}/aliases", token=bob), 403, "M_FORBIDDEN"
    )

    await join(client, bob, room_id)
    await join(client, mallory, room_id)
    bobs_alias = f"#{unique_localpart()}:localhost"
    alices_alias = f"#{unique_localpart()}:localhost"
    (await client.request("PUT", alias_path(bobs_alias), json={"room_id": room_id}, token=bob)).ok()
    (
        await client.request(
            "PUT", alias_path(alices_alias), json={"room_id": room_id}, token=alice
        )
    ).ok()
    # Neither the alias's creator nor able to send m.room.canonical_alias (level 50).
    for alias in (bobs_alias, alices_alias):
        denied = await client.request("DELETE", alias_path(alias), token=mallory)
        assert_error(denied, 403, "M_FORBIDDEN")
    assert_error(
        await client.request("DELETE", alias_path(alices_alias), token=bob), 403, "M_FORBIDDEN"
    )
    # The room's creator (power 100) may delete anyone's alias.
    (await client.request("DELETE", alias_path(bobs_alias), token=alice)).ok()
    (await client.request("DELETE", alias_path(alices_alias), token=alice)).ok()
    aliases = (await client.request("GET", f"rooms/{room_id}/aliases", token=bob)).ok()
    assert aliases == {"aliases": []}


async def test_create_room_with_alias_then_join_by_alias(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    localpart = unique_localpart("room")
    alias = f"#{localpart}:localhost"
    room_id = await create_room(client, alice, preset="public_chat", room_alias_name=localpart)
    state = (
        await client.request("GET", f"rooms/{room_id}/state/m.room.canonical_alias", token=alice)
    ).ok()
    assert state == {"alias": alias}
    assert (await client.request("GET", alias_path(alias))).ok()["room_id"] == room_id

    joined = (await client.request("POST", f"join/{quote(alias)}", json={}, token=bob)).ok()
    assert joined == {"room_id": room_id}
    rooms = (await client.request("GET", "joined_rooms", token=bob)).ok()
    assert room_id in rooms["joined_rooms"]

    taken = await client.request(
        "POST", "createRoom", json={"room_alias_name": localpart}, token=bob
    )
    assert_error(taken, 400, "M_ROOM_IN_USE")
    unknown = await client.request(
        "POST", f"join/{quote('#no-such-alias:localhost')}", json={}, token=bob
    )
    assert_error(unknown, 404, "M_NOT_FOUND")


async def test_deleting_canonical_alias_updates_the_event(client: MatrixClient) -> None:
    alice = await client.register()
    localpart = unique_localpart("canon")
    room_id = await create_room(client, alice, room_alias_name=localpart)
    (await client.request("DELETE", alias_path(f"#{localpart}:localhost"), token=alice)).ok()
    state = (
        await client.request("GET", f"rooms/{room_id}/state/m.room.canonical_alias", token=alice)
    ).ok()
    assert state == {}


# Room visibility -----------------------------------------------------------------------


async def test_room_visibility_in_directory(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    path = f"directory/list/room/{room_id}"
    assert (await client.request("GET", path)).ok() == {"visibility": "private"}
    (await client.request("PUT", path, json={"visibility": "public"}, token=alice)).ok()
    assert (await client.request("GET", path)).ok() == {"visibility": "public"}

    assert_error(
        await client.request("PUT", path, json={"visibility": "private"}, token=bob),
        403,
        "M_FORBIDDEN",
    )
    await join(client, bob, room_id)
    assert_error(
        await client.request("PUT", path, json={"visibility": "private"}, token=bob),
        403,
        "M_FORBIDDEN",
    )
    assert_error(
        await client.request("PUT", path, json={"visibility": "secret"}, token=alice),
        400,
        "M_INVALID_PARAM",
    )
    (await client.request("PUT", path, json={"visibility": "private"}, token=alice)).ok()
    assert (await client.request("GET", path)).ok() == {"visibility": "private"}

    unknown = "directory/list/room/!unknown:localhost"
    assert_error(await client.request("GET", unknown), 404, "M_NOT_FOUND")
    assert_error(
        await client.request("PUT", unknown, json={"visibility": "public"}, token=alice),
        404,
        "M_NOT_FOUND",
    )


# Public room list -----------------------------------------------------------------------


async def search_rooms(client: MatrixClient, account: Account, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = (
        await client.request("POST", "publicRooms", json=body, token=account)
    ).ok()
    return result


async def test_public_rooms_entries_and_search(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    word = unique_localpart("topicword").replace("-", "")
    localpart = unique_localpart("listed")
    big = await create_room(
        client,
        alice,
        visibility="public",
        preset="public_chat",
        name=f"Big {word}",
        topic="A room about things",
        room_alias_name=localpart,
    )
    await join(client, bob, big)
    small = await create_room(
        client, alice, visibility="public", preset="public_chat", topic=f"all about {word}"
    )
    unlisted = await create_room(client, alice, preset="public_chat", name=f"Hidden {word}")
    invite_only = await create_room(
        client, alice, visibility="public", preset="private_chat", name=f"Private {word}"
    )

    found = await search_rooms(client, alice, filter={"generic_search_term": word.upper()})
    assert [r["room_id"] for r in found["chunk"]] == [big, small]
    assert found["total_room_count_estimate"] >= 2
    assert found["chunk"][0] == {
        "room_id": big,
        "name": f"Big {word}",
        "topic": "A room about things",
        "canonical_alias": f"#{localpart}:localhost",
        "num_joined_members": 2,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
    }
    assert found["chunk"][1]["num_joined_members"] == 1
    assert "name" not in found["chunk"][1]
    ids = {r["room_id"] for r in found["chunk"]}
    assert unlisted not in ids and invite_only not in ids

    by_alias = await search_rooms(client, alice, filter={"generic_search_term": localpart})
    assert [r["room_id"] for r in by_alias["chunk"]] == [big]
    by_id = await search_rooms(client, alice, filter={"generic_search_term": small})
    assert [r["room_id"] for r in by_id["chunk"]] == [small]
    no_spaces = await search_rooms(
        client, alice, filter={"generic_search_term": word, "room_types": ["m.space"]}
    )
    assert no_spaces["chunk"] == []


async def test_public_rooms_pagination(client: MatrixClient) -> None:
    alice = await client.register()
    word = unique_localpart("page").replace("-", "")
    rooms = {
        await create_room(client, alice, visibility="public", name=f"{word} {i}") for i in range(3)
    }
    search = {"generic_search_term": word}
    first = await search_rooms(client, alice, limit=2, filter=search)
    assert len(first["chunk"]) == 2 and "prev_batch" not in first
    second = await search_rooms(client, alice, limit=2, since=first["next_batch"], filter=search)
    assert len(second["chunk"]) == 1 and "next_batch" not in second
    assert {r["room_id"] for r in first["chunk"] + second["chunk"]} == rooms
    back = await search_rooms(client, alice, limit=2, since=second["prev_batch"], filter=search)
    assert back["chunk"] == first["chunk"]

    everything = (await client.request("GET", "publicRooms")).ok()
    assert rooms <= {r["room_id"] for r in everything["chunk"]}
    paged = (await client.request("GET", "publicRooms", params={"limit": "1"})).ok()
    assert len(paged["chunk"]) == 1 and "next_batch" in paged
    following = (
        await client.request(
            "GET", "publicRooms", params={"limit": "1", "since": paged["next_batch"]}
        )
    ).ok()
    assert following["chunk"] != paged["chunk"]
    bad = await client.request("GET", "publicRooms", params={"since": "garbage"})
    assert_error(bad, 400, "M_INVALID_PARAM")


async def test_unpublished_room_leaves_the_list(client: MatrixClient) -> None:
    alice = await client.register()
    word = unique_localpart("gone").replace("-", "")
    room_id = await create_room(client, alice, visibility="public", name=word)
    search = {"generic_search_term": word}
    assert [r["room_id"] for r in (await search_rooms(client, alice, filter=search))["chunk"]] == [
        room_id
    ]
    (
        await client.request(
            "PUT", f"directory/list/room/{room_id}", json={"visibility": "private"}, token=alice
        )
    ).ok()
    assert (await search_rooms(client, alice, filter=search))["chunk"] == []
    # A name change shows up in the listing once the room is published again.
    (
        await client.request(
            "PUT", f"rooms/{room_id}/state/m.room.name", json={"name": f"{word} v2"}, token=alice
        )
    ).ok()
    (
        await client.request(
            "PUT", f"directory/list/room/{room_id}", json={"visibility": "public"}, token=alice
        )
    ).ok()
    chunk = (await search_rooms(client, alice, filter=search))["chunk"]
    assert [r["name"] for r in chunk] == [f"{word} v2"]


async def test_redacted_state_leaves_the_directory_and_joined_members(
    client: MatrixClient,
) -> None:
    """What a redaction removed from room state is not shown by the public room
    directory (whose entries are cached) or by /joined_members either."""
    alice = await client.register()
    marker = unique_localpart("redactdir")
    room = await create_room(client, alice, preset="public_chat", visibility="public", name=marker)
    topic = (
        await client.request(
            "PUT",
            f"rooms/{quote(room)}/state/m.room.topic/",
            json={"topic": "rude topic"},
            token=alice,
        )
    ).ok()["event_id"]
    search = {"filter": {"generic_search_term": marker}}
    [listed] = (await client.request("POST", "publicRooms", json=search, token=alice)).ok()["chunk"]
    assert listed["topic"] == "rude topic"
    name = {"displayname": "rude name"}
    (
        await client.request(
            "PUT", f"profile/{quote(alice.user_id)}/displayname", json=name, token=alice
        )
    ).ok()
    member = (
        await client.request(
            "GET",
            f"rooms/{quote(room)}/state/m.room.member/{quote(alice.user_id)}",
            params={"format": "event"},
            token=alice,
        )
    ).ok()["event_id"]
    for n, event_id in enumerate((topic, member)):
        path = f"rooms/{quote(room)}/redact/{quote(event_id)}/rd{marker}{n}"
        (await client.request("PUT", path, json={}, token=alice)).ok()
    [listed] = (await client.request("POST", "publicRooms", json=search, token=alice)).ok()["chunk"]
    assert "topic" not in listed or listed["topic"] is None
    joined = (await client.request("GET", f"rooms/{quote(room)}/joined_members", token=alice)).ok()
    assert joined["joined"][alice.user_id]["display_name"] is None
