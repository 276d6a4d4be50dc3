"""Spaces on one server, over HTTP on every backend (Client-Server API, "Spaces": GET
/_matrix/client/v1/rooms/{roomId}/hierarchy): which children a user sees (joined,
public, world-readable, knockable, restricted to a space they are in; never a private
room they are not in), the spec's order of children, loops, ``max_depth``,
``suggested_only``, pagination with ``limit`` / ``from``, and the spec's errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response
from harness.rooms import create_room, put_state


async def hierarchy(
    client: MatrixClient, account: Account | None, room_id: str, **query: str
) -> Response:
    path = f"/_matrix/client/v1/rooms/{quote(room_id, safe='')}/hierarchy"
    if query:
        path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return await client.request("GET", path, token=account)


def state_event(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "state_key": "", "content": content}


async def add_child(
    client: MatrixClient, account: Account, space: str, child: str, **content: Any
) -> None:
    server = account.user_id.split(":", 1)[1]
    await put_state(
        client, account, space, "m.space.child", {"via": [server], **content}, state_key=child
    )


async def join(client: MatrixClient, account: Account, room_id: str) -> None:
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=account)).ok()


@dataclass(frozen=True)
class Space:
    """Alice's space: ``public``, ``private`` (invite only), ``restricted`` (to members
    of the space), ``readable`` (world-readable), ``knock``, and ``sub`` (a space holding
    ``deep`` and, as a loop, the space itself); Bob is a member of the space."""

    alice: Account
    bob: Account
    space: str
    public: str
    private: str
    restricted: str
    readable: str
    knock: str
    sub: str
    deep: str


async def make_space(client: MatrixClient) -> Space:
    alice, bob = await client.register(), await client.register()
    space_type = {"type": "m.space"}
    space = await create_room(
        client, alice, preset="public_chat", name="Space", creation_content=space_type
    )
    public = await create_room(client, alice, preset="public_chat", name="Public")
    private = await create_room(client, alice, preset="private_chat", name="Private")
    allow = [{"type": "m.room_membership", "room_id": space}]
    restricted = await create_room(
        client,
        alice,
        preset="private_chat",
        name="Restricted",
        initial_state=[
            state_event("m.room.join_rules", {"join_rule": "restricted", "allow": allow})
        ],
    )
    readable = await create_room(
        client,
        alice,
        preset="private_chat",
        initial_state=[
            state_event("m.room.history_visibility", {"history_visibility": "world_readable"})
        ],
    )
    knock = await create_room(
        client,
        alice,
        preset="private_chat",
        initial_state=[state_event("m.room.join_rules", {"join_rule": "knock"})],
    )
    sub = await create_room(
        client, alice, preset="public_chat", name="Sub", creation_content=space_type
    )
    deep = await create_room(client, alice, preset="public_chat", name="Deep")
    # The order: "a" < "b" < "c" by `order`, then the rest by the time they were added.
    await add_child(client, alice, space, sub, order="c", suggested=True)
    await add_child(client, alice, space, public, order="a", suggested=True)
    await add_child(client, alice, space, private, order="b")
    await add_child(client, alice, space, restricted)
    await add_child(client, alice, space, readable, order="\u00e9")  # invalid: by time
    await add_child(client, alice, space, knock)
    await put_state(client, alice, space, "m.space.child", {"via": []}, state_key=deep)
    await add_child(client, alice, sub, deep)
    await add_child(client, alice, sub, space)  # a loop
    await join(client, bob, space)
    return Space(alice, bob, space, public, private, restricted, readable, knock, sub, deep)


def room_ids(answer: dict[str, Any]) -> list[str]:
    return [room["room_id"] for room in answer["rooms"]]


async def test_a_member_sees_what_the_space_lets_them(client: MatrixClient) -> None:
    s = await make_space(client)
    answer = (await hierarchy(client, s.bob, s.space)).ok()
    # Depth first in the spec's order; the private room hidden; the loop ends at `sub`.
    assert room_ids(answer) == [
        s.space,
        s.public,
        s.sub,
        s.deep,
        s.restricted,
        s.readable,
        s.knock,
    ]
    assert "next_batch" not in answer
    root = answer["rooms"][0]
    assert root["name"] == "Space" and root["room_type"] == "m.space"
    assert root["num_joined_members"] == 2 and root["join_rule"] == "public"
    children = root["children_state"]
    # Every child with a via, in order (the one with an empty via left out).
    assert [c["state_key"] for c in children] == [
        s.public,
        s.private,
        s.sub,
        s.restricted,
        s.readable,
        s.knock,
    ]
    first = children[0]
    assert set(first) == {"type", "state_key", "content", "sender", "origin_server_ts"}
    assert first["type"] == "m.space.child" and first["sender"] == s.alice.user_id
    assert first["content"]["order"] == "a" and first["content"]["suggested"] is True
    by_id = {room["room_id"]: room for room in answer["rooms"]}
    assert by_id[s.restricted]["join_rule"] == "restricted"
    assert by_id[s.restricted]["allowed_room_ids"] == [s.space]
    assert by_id[s.public]["children_state"] == []  # not a space
    assert [c["state_key"] for c in by_id[s.sub]["children_state"]] == [s.deep, s.space]
    # Alice, in every room, also sees the private one.
    own = (await hierarchy(client, s.alice, s.space)).ok()
    assert room_ids(own) == [
        s.space,
        s.public,
        s.private,
        s.sub,
        s.deep,
        s.restricted,
        s.readable,
        s.knock,
    ]


async def test_a_non_member_sees_the_open_rooms_only(client: MatrixClient) -> None:
    s = await make_space(client)
    carol = await client.register()
    answer = (await hierarchy(client, carol, s.space)).ok()
    assert room_ids(answer) == [s.space, s.public, s.sub, s.deep, s.readable, s.knock]
    # Invited to the private room, she sees it too; joined to the space, the restricted.
    invite = {"user_id": carol.user_id}
    path = f"rooms/{quote(s.private)}/invite"
    (await client.request("POST", path, json=invite, token=s.alice)).ok()
    await join(client, carol, s.space)
    after = (await hierarchy(client, carol, s.space)).ok()
    assert s.private in room_ids(after) and s.restricted in room_ids(after)


async def test_max_depth_and_suggested_only(client: MatrixClient) -> None:
    s = await make_space(client)
    root_only = (await hierarchy(client, s.bob, s.space, max_depth="0")).ok()
    assert room_ids(root_only) == [s.space]
    assert len(root_only["rooms"][0]["children_state"]) == 6  # named, not walked
    one = (await hierarchy(client, s.bob, s.space, max_depth="1")).ok()
    assert room_ids(one) == [s.space, s.public, s.sub, s.restricted, s.readable, s.knock]
    suggested = (await hierarchy(client, s.bob, s.space, suggested_only="true")).ok()
    assert room_ids(suggested) == [s.space, s.public, s.sub]
    assert [c["state_key"] for c in suggested["rooms"][0]["children_state"]] == [
        s.public,
        s.sub,
    ]


async def test_pages_follow_one_another(client: MatrixClient) -> None:
    s = await make_space(client)
    everything = room_ids((await hierarchy(client, s.bob, s.space)).ok())
    seen: list[str] = []
    token: str | None = None
    for _ in range(len(everything) + 1):
        query = {"limit": "2"} if token is None else {"limit": "2", "from": token}
        page = (await hierarchy(client, s.bob, s.space, **query)).ok()
        assert len(page["rooms"]) <= 2
        seen += room_ids(page)
        token = page.get("next_batch")
        if token is None:
            break
    assert seen == everything
    first = (await hierarchy(client, s.bob, s.space, limit="1")).ok()
    token = first["next_batch"]
    assert isinstance(token, str)
    # The same token twice gives the same page; with other parameters it is refused.
    again = (await hierarchy(client, s.bob, s.space, limit="1", **{"from": token})).ok()
    assert room_ids(again) == [everything[1]]
    assert (
        room_ids((await hierarchy(client, s.bob, s.space, **{"from": token})).ok())
        == (everything[1:])
    )
    carol = await client.register()
    refused = [
        await hierarchy(client, s.bob, s.space, suggested_only="true", **{"from": token}),
        await hierarchy(client, s.bob, s.space, max_depth="3", **{"from": token}),
        await hierarchy(client, s.bob, s.sub, **{"from": token}),
        await hierarchy(client, carol, s.space, **{"from": token}),
        await hierarchy(client, s.bob, s.space, **{"from": "not-a-token"}),
    ]
    for response in refused:
        assert response.status == 400, response.body
        assert response.body["errcode"] == "M_INVALID_PARAM"


async def test_children_whose_state_key_is_not_a_room_id_are_left_out(
    client: MatrixClient,
) -> None:
    """Only an ``m.space.child`` keyed by a room ID names a child: the others are neither
    listed in ``children_state`` nor walked (nor asked of their ``via`` servers)."""
    alice = await client.register()
    space = await create_room(
        client, alice, preset="public_chat", creation_content={"type": "m.space"}
    )
    public = await create_room(client, alice, preset="public_chat")
    for state_key in ("", "abc", "#alias:example.org", alice.user_id):
        content = {"via": ["example.invalid"], "order": "a"}
        await put_state(client, alice, space, "m.space.child", content, state_key=state_key)
    await add_child(client, alice, space, public, order="b")
    answer = (await hierarchy(client, alice, space)).ok()
    assert room_ids(answer) == [space, public]
    assert [c["state_key"] for c in answer["rooms"][0]["children_state"]] == [public]
    assert "next_batch" not in answer


async def test_one_users_requests_never_push_out_anothers_tokens(client: MatrixClient) -> None:
    """Tokens are held a few per user: Bob paging more than every user's share together
    (once, one cache of 256 tokens for all) only pushes out his own oldest token."""
    s = await make_space(client)
    everything = room_ids((await hierarchy(client, s.bob, s.space)).ok())
    alice_token = (await hierarchy(client, s.alice, s.space, limit="1")).ok()["next_batch"]
    bob_tokens = [
        (await hierarchy(client, s.bob, s.space, limit="1")).ok()["next_batch"] for _ in range(300)
    ]
    own = (await hierarchy(client, s.alice, s.space, **{"from": alice_token})).ok()
    assert room_ids(own)[:2] == [s.public, s.private]
    newest = (await hierarchy(client, s.bob, s.space, **{"from": bob_tokens[-1]})).ok()
    assert room_ids(newest) == everything[1:]
    oldest = await hierarchy(client, s.bob, s.space, **{"from": bob_tokens[0]})
    assert (oldest.status, oldest.body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_errors(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    private = await create_room(
        client, alice, preset="private_chat", creation_content={"type": "m.space"}
    )
    for query in (
        {"limit": "0"},
        {"limit": "many"},
        {"max_depth": "-1"},
        {"max_depth": "deep"},
        {"suggested_only": "maybe"},
    ):
        response = await hierarchy(client, alice, private, **query)
        assert response.status == 400, query
        assert response.body["errcode"] == "M_INVALID_PARAM", query
    not_room = await hierarchy(client, alice, "#alias:example.org")
    assert (not_room.status, not_room.body["errcode"]) == (400, "M_INVALID_PARAM")
    for room_id in (private, "!unknown:example.org", "!unknown"):
        response = await hierarchy(client, bob, room_id)
        assert (response.status, response.body["errcode"]) == (403, "M_FORBIDDEN"), room_id
    anonymous = await hierarchy(client, None, private)
    assert (anonymous.status, anonymous.body["errcode"]) == (401, "M_MISSING_TOKEN")
    # A huge limit is capped, not refused.
    assert room_ids((await hierarchy(client, alice, private, limit="100000")).ok()) == [private]


async def test_unreachable_rooms_are_walked_in_bounded_pages(client: MatrixClient) -> None:
    """Rooms on servers this one cannot ask (federation is off here) are hidden, at most
    ten of them asked for a page: the walk goes on page by page and ends."""
    alice = await client.register()
    space = await create_room(
        client, alice, preset="public_chat", creation_content={"type": "m.space"}
    )
    public = await create_room(client, alice, preset="public_chat")
    for number in range(25):
        content = {"via": ["example.org"], "order": f"a{number:02}"}
        await put_state(
            client, alice, space, "m.space.child", content, state_key=f"!gone{number}:example.org"
        )
    await add_child(client, alice, space, public, order="z")
    seen: list[str] = []
    pages = 0
    query: dict[str, str] = {}
    for _ in range(10):
        pages += 1
        page = (await hierarchy(client, alice, space, **query)).ok()
        seen += room_ids(page)
        if "next_batch" not in page:
            break
        query = {"from": page["next_batch"]}
    assert seen == [space, public]
    assert pages == 3
