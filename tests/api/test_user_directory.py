"""User directory search over HTTP against a real Peyvand (Client-Server API, "User
directory"): local users who share a room with the searcher or are in a public room (one
anyone may join or read)."""

from __future__ import annotations

from typing import Any

from harness.client import Account, MatrixClient, Response, unique_localpart


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def set_name(client: MatrixClient, account: Account, name: str) -> None:
    path = f"profile/{account.user_id}/displayname"
    (await client.request("PUT", path, json={"displayname": name}, token=account)).ok()


async def search(client: MatrixClient, account: Account, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = (
        await client.request("POST", "user_directory/search", json=body, token=account)
    ).ok()
    return result


async def new_room(client: MatrixClient, account: Account, **body: Any) -> str:
    result = (await client.request("POST", "createRoom", json=body, token=account)).ok()
    room_id: str = result["room_id"]
    return room_id


async def test_finds_users_sharing_a_room_by_name_and_localpart(client: MatrixClient) -> None:
    word = unique_localpart("zq").replace("-", "")
    alice = await client.register()
    bob = await client.register(unique_localpart(f"bob{word}"))
    stranger = await client.register(unique_localpart(f"stranger{word}"))
    await set_name(client, bob, f"Bob {word.upper()}")
    avatar = "mxc://localhost/bobavatar"
    (
        await client.request(
            "PUT", f"profile/{bob.user_id}/avatar_url", json={"avatar_url": avatar}, token=bob
        )
    ).ok()
    room_id = await new_room(client, alice, invite=[bob.user_id])
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    await new_room(client, stranger)  # joined, but to a private room of their own

    by_name = await search(client, alice, search_term=f"bob {word}")
    assert by_name == {
        "results": [
            {"user_id": bob.user_id, "display_name": f"Bob {word.upper()}", "avatar_url": avatar}
        ],
        "limited": False,
    }
    by_localpart = await search(client, alice, search_term=word)
    assert [r["user_id"] for r in by_localpart["results"]] == [bob.user_id]
    assert (await search(client, stranger, search_term=f"bob{word}"))["results"] == []


async def test_finds_users_in_public_rooms_only(client: MatrixClient) -> None:
    """Public means joinable or world-readable now, as in Synapse: not published in the room
    list, so a user whose only room is private stays hidden from strangers."""
    word = unique_localpart("pub").replace("-", "")
    searcher = await client.register()
    host = await client.register()
    await set_name(client, host, f"Host {word}")
    hidden = await client.register()
    await set_name(client, hidden, f"Hidden {word}")
    room_id = await new_room(client, host, preset="public_chat")  # joinable, not published
    await new_room(client, hidden, visibility="public", preset="private_chat")

    async def found() -> list[str]:
        return [r["user_id"] for r in (await search(client, searcher, search_term=word))["results"]]

    assert await found() == [host.user_id]
    # Searchers find themselves only through a public room, as in Synapse.
    own = await search(client, hidden, search_term=word)
    assert [r["user_id"] for r in own["results"]] == [host.user_id]

    async def put(event_type: str, content: dict[str, str]) -> None:
        path = f"rooms/{room_id}/state/{event_type}"
        (await client.request("PUT", path, json=content, token=host)).ok()

    await put("m.room.join_rules", {"join_rule": "invite"})
    assert await found() == []
    await put("m.room.history_visibility", {"history_visibility": "world_readable"})
    assert await found() == [host.user_id]


async def test_limit_and_prefix_order(client: MatrixClient) -> None:
    word = unique_localpart("lim").replace("-", "")
    alice = await client.register()
    names = [f"x{word} contains", f"{word} prefix", f"y{word} another"]
    members = [await client.register() for _ in names]
    room_id = await new_room(client, alice, preset="public_chat")
    for member, name in zip(members, names, strict=True):
        await set_name(client, member, name)
        (await client.request("POST", f"rooms/{room_id}/join", json={}, token=member)).ok()

    everyone = await search(client, alice, search_term=word)
    assert [r["display_name"] for r in everyone["results"]] == [
        f"{word} prefix",
        f"x{word} contains",
        f"y{word} another",
    ]
    assert everyone["limited"] is False
    limited = await search(client, alice, search_term=word, limit=2)
    assert len(limited["results"]) == 2 and limited["limited"] is True
    # LIKE wildcards in the term are matched literally.
    assert (await search(client, alice, search_term=f"{word}%"))["results"] == []


async def test_search_validation(client: MatrixClient) -> None:
    alice = await client.register()
    missing = await client.request("POST", "user_directory/search", json={}, token=alice)
    assert_error(missing, 400, "M_MISSING_PARAM")
    wrong = await client.request(
        "POST", "user_directory/search", json={"search_term": 5}, token=alice
    )
    assert_error(wrong, 400, "M_BAD_JSON")
    anonymous = await client.request("POST", "user_directory/search", json={"search_term": "a"})
    assert_error(anonymous, 401, "M_MISSING_TOKEN")
