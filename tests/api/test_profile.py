"""Profiles over HTTP against a real Peyvand (every backend).

Client-Server API, "Profiles": GET/PUT of displayname and avatar_url, and the new
``m.room.member`` event a change sends to every room the user is joined to.
"""

from __future__ import annotations

from typing import Any

from harness.client import Account, MatrixClient, Response


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def create_room(client: MatrixClient, account: Account, **body: Any) -> str:
    result = (await client.request("POST", "createRoom", json=body, token=account)).ok()
    room_id: str = result["room_id"]
    return room_id


async def member_content(
    client: MatrixClient, account: Account, room_id: str, user_id: str
) -> dict[str, Any]:
    path = f"rooms/{room_id}/state/m.room.member/{user_id}"
    content: dict[str, Any] = (await client.request("GET", path, token=account)).ok()
    return content


async def test_set_and_get_displayname_and_avatar(client: MatrixClient) -> None:
    alice = await client.register()
    assert (await client.request("GET", f"profile/{alice.user_id}")).ok() == {}
    put = await client.request(
        "PUT", f"profile/{alice.user_id}/displayname", json={"displayname": "Alice"}, token=alice
    )
    assert put.ok() == {}
    avatar = "mxc://localhost/abcDEF123"
    put = await client.request(
        "PUT", f"profile/{alice.user_id}/avatar_url", json={"avatar_url": avatar}, token=alice
    )
    assert put.ok() == {}
    profile = (await client.request("GET", f"profile/{alice.user_id}")).ok()
    assert profile == {"displayname": "Alice", "avatar_url": avatar}
    displayname = (await client.request("GET", f"profile/{alice.user_id}/displayname")).ok()
    assert displayname == {"displayname": "Alice"}
    avatar_url = (await client.request("GET", f"profile/{alice.user_id}/avatar_url")).ok()
    assert avatar_url == {"avatar_url": avatar}


async def test_empty_value_and_delete_clear_the_field(client: MatrixClient) -> None:
    alice = await client.register()
    path = f"profile/{alice.user_id}/displayname"
    (await client.request("PUT", path, json={"displayname": "Alice"}, token=alice)).ok()
    (await client.request("PUT", path, json={"displayname": ""}, token=alice)).ok()
    assert (await client.request("GET", path)).ok() == {}
    avatar_path = f"profile/{alice.user_id}/avatar_url"
    avatar = {"avatar_url": "mxc://localhost/media1"}
    (await client.request("PUT", avatar_path, json=avatar, token=alice)).ok()
    (await client.request("DELETE", avatar_path, token=alice)).ok()
    assert (await client.request("GET", f"profile/{alice.user_id}")).ok() == {}


async def test_unknown_and_invalid_users(client: MatrixClient) -> None:
    missing = await client.request("GET", "profile/@nobody-at-all:localhost")
    assert_error(missing, 404, "M_NOT_FOUND")
    field = await client.request("GET", "profile/@nobody-at-all:localhost/displayname")
    assert_error(field, 404, "M_NOT_FOUND")
    remote = await client.request("GET", "profile/@someone:elsewhere.example")
    assert_error(remote, 404, "M_NOT_FOUND")
    assert_error(await client.request("GET", "profile/not-a-user-id"), 400, "M_INVALID_PARAM")


async def test_cannot_set_another_users_profile(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    put = await client.request(
        "PUT", f"profile/{bob.user_id}/displayname", json={"displayname": "Not Bob"}, token=alice
    )
    assert_error(put, 403, "M_FORBIDDEN")
    put = await client.request(
        "PUT",
        f"profile/{bob.user_id}/avatar_url",
        json={"avatar_url": "mxc://localhost/x"},
        token=alice,
    )
    assert_error(put, 403, "M_FORBIDDEN")
    anonymous = await client.request(
        "PUT", f"profile/{bob.user_id}/displayname", json={"displayname": "Bob"}
    )
    assert_error(anonymous, 401, "M_MISSING_TOKEN")
    assert (await client.request("GET", f"profile/{bob.user_id}")).ok() == {}


async def test_invalid_values_are_rejected(client: MatrixClient) -> None:
    alice = await client.register()
    name_path = f"profile/{alice.user_id}/displayname"
    avatar_path = f"profile/{alice.user_id}/avatar_url"
    cases = [
        (name_path, {"displayname": "x" * 257}, "M_INVALID_PARAM"),
        (name_path, {"displayname": 42}, "M_INVALID_PARAM"),
        (name_path, {"displayname": None}, "M_INVALID_PARAM"),
        (name_path, {}, "M_MISSING_PARAM"),
        (avatar_path, {"avatar_url": "mxc://" + "a" * 1000}, "M_INVALID_PARAM"),
        (avatar_path, {"avatar_url": ["mxc://localhost/a"]}, "M_INVALID_PARAM"),
    ]
    for path, body, errcode in cases:
        assert_error(await client.request("PUT", path, json=body, token=alice), 400, errcode)
    ok = await client.request("PUT", name_path, json={"displayname": "x" * 256}, token=alice)
    assert ok.ok() == {}


async def test_change_sends_new_member_event_to_joined_rooms(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    rooms = [await create_room(client, alice, preset="public_chat") for _ in range(3)]
    for room_id in rooms:
        (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    left = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"rooms/{left}/join", json={}, token=bob)).ok()
    (await client.request("POST", f"rooms/{left}/leave", json={}, token=bob)).ok()

    avatar = "mxc://localhost/bobface"
    (
        await client.request(
            "PUT", f"profile/{bob.user_id}/avatar_url", json={"avatar_url": avatar}, token=bob
        )
    ).ok()
    (
        await client.request(
            "PUT", f"profile/{bob.user_id}/displayname", json={"displayname": "Bobby"}, token=bob
        )
    ).ok()
    for room_id in rooms:
        content = await member_content(client, alice, room_id, bob.user_id)
        assert content == {"membership": "join", "displayname": "Bobby", "avatar_url": avatar}
    assert (await member_content(client, alice, left, bob.user_id)) == {"membership": "leave"}

    # The change is a new event in the room's timeline, seen by the other member.
    sync = (await client.request("GET", "sync", token=alice)).ok()
    timeline = sync["rooms"]["join"][rooms[0]]["timeline"]["events"]
    bob_members = [
        e for e in timeline if e["type"] == "m.room.member" and e["state_key"] == bob.user_id
    ]
    assert bob_members[-1]["content"]["displayname"] == "Bobby"
    assert bob_members[-1]["content"]["membership"] == "join"


async def test_profile_is_used_in_new_membership_events(client: MatrixClient) -> None:
    alice = await client.register()
    (
        await client.request(
            "PUT",
            f"profile/{alice.user_id}/displayname",
            json={"displayname": "Alice A."},
            token=alice,
        )
    ).ok()
    room_id = await create_room(client, alice)
    content = await member_content(client, alice, room_id, alice.user_id)
    assert content["displayname"] == "Alice A."


async def test_avatar_urls_are_kept_as_given(client: MatrixClient) -> None:
    """Any avatar URL string within the length limit is kept, as Synapse keeps it."""
    alice = await client.register()
    path = f"profile/{alice.user_id}/avatar_url"
    for avatar in ("https://example.com/a.png", "LemurFace.jpg"):
        (await client.request("PUT", path, json={"avatar_url": avatar}, token=alice)).ok()
        assert (await client.request("GET", path, token=alice)).ok() == {"avatar_url": avatar}
