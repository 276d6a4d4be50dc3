"""Spaces across Peyvand and its peer, a real Synapse or a second Peyvand, on every backend
(Client-Server API GET /_matrix/client/v1/rooms/{roomId}/hierarchy, answered for rooms
a server is not in through the Server-Server API GET /_matrix/federation/v1/hierarchy/{roomId}).

- A Peyvand space with public, private and restricted Peyvand rooms, a Peyvand sub-space
  and a room on the peer: a Peyvand member of the space sees all but the private rooms
  (the peer's room asked of the peer); a peer user who joined the space browses it from
  the peer (each Peyvand room it is not in asked of Peyvand).
- The reverse: a Peyvand user who joined a space on the peer browses it, page by page.
- What Peyvand answers another server (a fake one): the space, the children it may see,
  and those it may not.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.fake_server import FakeServer
from harness.federation import Pair, fake_peer_room
from harness.rooms import create_room, put_state
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 90
_SPACE = {"type": "m.space"}


async def _hierarchy(
    client: MatrixClient, account: Account, room_id: str, **query: str
) -> dict[str, Any]:
    path = f"/_matrix/client/v1/rooms/{quote(room_id, safe='')}/hierarchy"
    response = await client.request("GET", path, token=account, params=query or None)
    answer: dict[str, Any] = response.ok()
    return answer


def _ids(answer: dict[str, Any]) -> list[str]:
    return [room["room_id"] for room in answer["rooms"]]


async def _add_child(
    client: MatrixClient, account: Account, space: str, child: str, server: str, order: str
) -> None:
    content = {"via": [server], "order": order}
    await put_state(client, account, space, "m.space.child", content, state_key=child)


async def _join(client: MatrixClient, account: Account, room_id: str, server: str) -> None:
    params = {"server_name": server}
    path = f"join/{quote(room_id)}"
    (await client.request("POST", path, json={}, token=account, params=params)).ok()


async def test_a_peyvand_space_with_a_room_on_the_peer(pair: Pair) -> None:
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    here, there = peyvand.server_name, peer.server_name
    carol = await peyvand_client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        space = await create_room(
            peyvand_client, alice, preset="public_chat", name="Ours", creation_content=_SPACE
        )
        public = await create_room(peyvand_client, alice, preset="public_chat", name="Public")
        private = await create_room(peyvand_client, alice, preset="private_chat")
        allow = [{"type": "m.room_membership", "room_id": space}]
        rules = {"join_rule": "restricted", "allow": allow}
        restricted = await create_room(
            peyvand_client,
            alice,
            preset="private_chat",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": rules}],
        )
        sub = await create_room(
            peyvand_client, alice, preset="public_chat", name="Sub", creation_content=_SPACE
        )
        inner = await create_room(peyvand_client, alice, preset="public_chat", name="Inner")
        hidden = await create_room(peyvand_client, alice, preset="private_chat")
        far = await create_room(peer_client, bob, preset="public_chat", name="On the peer")
        for order, child in enumerate((public, private, restricted, sub)):
            await _add_child(peyvand_client, alice, space, child, here, str(order))
        await _add_child(peyvand_client, alice, space, far, there, "9")
        await _add_child(peyvand_client, alice, sub, inner, here, "1")
        await _add_child(peyvand_client, alice, sub, hidden, here, "2")
        visible = [space, public, restricted, sub, inner, far]

        await _join(peyvand_client, carol, space, here)
        seen = await _hierarchy(peyvand_client, carol, space)
        await _join(peer_client, bob, space, here)
        from_peer = await _hierarchy(peer_client, bob, space)
    assert _ids(seen) == visible
    remote = seen["rooms"][-1]
    assert remote["name"] == "On the peer" and remote["join_rule"] == "public"
    assert remote["num_joined_members"] == 1 and remote["children_state"] == []
    assert _ids(from_peer) == visible
    by_id = {room["room_id"]: room for room in from_peer["rooms"]}
    assert by_id[restricted]["allowed_room_ids"] == [space]
    assert by_id[inner]["name"] == "Inner" and by_id[sub]["room_type"] == "m.space"
    assert [c["state_key"] for c in by_id[sub]["children_state"]] == [inner, hidden]
    assert "Unhandled error" not in peyvand.log()


async def test_a_peyvand_user_browses_a_space_on_the_peer(pair: Pair) -> None:
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    there = peer.server_name
    async with asyncio.timeout(TIMEOUT_SECONDS):
        space = await create_room(
            peer_client, bob, preset="public_chat", name="Theirs", creation_content=_SPACE
        )
        public = await create_room(peer_client, bob, preset="public_chat", name="Public")
        private = await create_room(peer_client, bob, preset="private_chat")
        sub = await create_room(
            peer_client, bob, preset="public_chat", name="Sub", creation_content=_SPACE
        )
        inner = await create_room(peer_client, bob, preset="public_chat", name="Inner")
        for order, child in enumerate((public, private, sub)):
            await _add_child(peer_client, bob, space, child, there, str(order))
        await _add_child(peer_client, bob, sub, inner, there, "1")
        await _join(peyvand_client, alice, space, there)
        everything = await _hierarchy(peyvand_client, alice, space)
        shallow = await _hierarchy(peyvand_client, alice, space, max_depth="1")
        pages: list[str] = []
        query = {"limit": "2"}
        for _ in range(5):
            page = await _hierarchy(peyvand_client, alice, space, **query)
            pages += _ids(page)
            if "next_batch" not in page:
                break
            query = {"limit": "2", "from": page["next_batch"]}
    assert _ids(everything) == [space, public, sub, inner]
    by_id = {room["room_id"]: room for room in everything["rooms"]}
    assert by_id[public]["name"] == "Public" and by_id[inner]["name"] == "Inner"
    assert [c["state_key"] for c in by_id[space]["children_state"]] == [public, private, sub]
    assert _ids(shallow) == [space, public, sub]
    assert pages == _ids(everything)
    assert "Unhandled error" not in peyvand.log()


async def test_what_peyvand_answers_another_server(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    room = await fake_peer_room(
        peyvand_client, fake, "browser", "10", name="Space", creation_content=_SPACE
    )
    alice, here = room.alice, peyvand.server_name
    public = await create_room(peyvand_client, alice, preset="public_chat", name="Open")
    private = await create_room(peyvand_client, alice, preset="private_chat", name="Closed")
    for order, child in enumerate((public, private, "!elsewhere:example.org")):
        await _add_child(peyvand_client, alice, room.room_id, child, here, str(order))
    path = f"/_matrix/federation/v1/hierarchy/{quote(room.room_id)}"
    status, answer = await fake.request("GET", path)
    assert status == 200, answer
    assert answer["room"]["room_id"] == room.room_id and answer["room"]["room_type"] == "m.space"
    assert [c["state_key"] for c in answer["room"]["children_state"]] == [
        public,
        private,
        "!elsewhere:example.org",
    ]
    assert [c["room_id"] for c in answer["children"]] == [public]
    assert answer["children"][0]["name"] == "Open"
    assert "children_state" not in answer["children"][0]
    assert answer["inaccessible_children"] == [private]
