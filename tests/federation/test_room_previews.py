"""Room previews across Peyvand and its peer, a real Synapse or a second Peyvand, on every
backend (Client-Server API GET /room_summary/{roomIdOrAlias} (MSC3266), answered through
the federation GET /hierarchy/{roomId} when the user's server is not in the room).

- Peyvand previews the peer's rooms it is not in: a public one by ID and by alias, a
  private one only once its user is invited.
- The peer previews Peyvand rooms it is not in: a public one, and a private one only once
  its user is invited (Peyvand serves its hierarchy to a server with an invited member).
"""

from __future__ import annotations

import asyncio
import itertools
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response
from harness.federation import Pair
from harness.rooms import create_room
from harness.sync import invited_to, sync_until

TIMEOUT_SECONDS = 60
_names = itertools.count()


async def _summary(
    client: MatrixClient, account: Account, room: str, via: str | None = None
) -> Response:
    path = f"/_matrix/client/v1/room_summary/{quote(room, safe='')}"
    if via is not None:
        path += f"?via={quote(via)}"
    return await client.request("GET", path, token=account)


async def test_peyvand_previews_the_peers_rooms(pair: Pair) -> None:
    _, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    name = f"preview{next(_names)}x{alice.user_id[1:9]}"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        public = await create_room(
            peer_client,
            bob,
            preset="public_chat",
            name="On the peer",
            topic="Far away",
            room_alias_name=name,
        )
        private = await create_room(peer_client, bob, preset="private_chat", name="Hidden")
        found = (await _summary(peyvand_client, alice, public, peer.server_name)).ok()
        by_alias = (await _summary(peyvand_client, alice, f"#{name}:{peer.server_name}")).ok()
        hidden = await _summary(peyvand_client, alice, private, peer.server_name)
        no_via = await _summary(peyvand_client, alice, public)
        # Invited, Alice previews the private room (the peer lets invited servers see it).
        invite = {"user_id": alice.user_id}
        path = f"rooms/{quote(private)}/invite"
        (await peer_client.request("POST", path, json=invite, token=bob)).ok()
        await sync_until(peyvand_client, alice, invited_to(private))
        invited = (await _summary(peyvand_client, alice, private, peer.server_name)).ok()
    assert found["room_id"] == public and found["name"] == "On the peer"
    assert found["topic"] == "Far away" and found["join_rule"] == "public"
    assert found["num_joined_members"] == 1 and found["membership"] == "leave"
    assert by_alias["room_id"] == public
    assert hidden.status == 404 and hidden.body["errcode"] == "M_NOT_FOUND"
    assert no_via.status == 400 and no_via.body["errcode"] == "M_MISSING_PARAM"
    assert invited["name"] == "Hidden" and invited["membership"] == "invite"


async def test_the_peer_previews_peyvand_rooms(pair: Pair) -> None:
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        public = await create_room(peyvand_client, alice, preset="public_chat", name="On Peyvand")
        private = await create_room(peyvand_client, alice, preset="private_chat", name="Ours")
        found = (await _summary(peer_client, bob, public, peyvand.server_name)).ok()
        hidden = await _summary(peer_client, bob, private, peyvand.server_name)
        invite = {"user_id": bob.user_id}
        path = f"rooms/{quote(private)}/invite"
        (await peyvand_client.request("POST", path, json=invite, token=alice)).ok()
        await sync_until(peer_client, bob, invited_to(private))
        invited = (await _summary(peer_client, bob, private, peyvand.server_name)).ok()
    assert found["room_id"] == public and found["name"] == "On Peyvand"
    assert found["join_rule"] == "public" and found["num_joined_members"] == 1
    assert hidden.status == 404
    assert invited["name"] == "Ours" and invited["membership"] == "invite"
