"""createRoom's ``invite`` list reaches users of other servers (Client-Server API,
"Creation"; Server-Server API, "Inviting to a room"): the invite goes through the invited
server's ``/invite`` handshake, as ``POST /rooms/{roomId}/invite`` does, so the invited
user sees it in /sync (with ``is_direct``) and can join. Both directions, with a real
Synapse and with a second Peyvand.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.federation import Pair
from harness.server import HomeserverProcess
from harness.sync import invited_to, sync_until, wait_until_joined

TIMEOUT_SECONDS = 60


async def _invite_then_join(
    inviter_client: MatrixClient,
    inviter: Account,
    invitee_client: MatrixClient,
    invitee: Account,
) -> None:
    """``inviter`` creates a direct chat inviting ``invitee`` (of the other server), who
    sees the invite in /sync, marked direct, and joins; the inviter sees the join."""
    created = await inviter_client.request(
        "POST",
        "createRoom",
        json={"preset": "trusted_private_chat", "is_direct": True, "invite": [invitee.user_id]},
        token=inviter,
    )
    room_id = str(created.ok()["room_id"])
    response = await sync_until(invitee_client, invitee, invited_to(room_id))
    invite_state = response["rooms"]["invite"][room_id]["invite_state"]["events"]
    own = [
        e
        for e in invite_state
        if e["type"] == "m.room.member" and e["state_key"] == invitee.user_id
    ]
    assert own, invite_state
    assert own[0]["content"]["membership"] == "invite"
    assert own[0]["content"].get("is_direct") is True
    joined = await invitee_client.request("POST", f"join/{quote(room_id)}", json={}, token=invitee)
    joined.ok()
    await wait_until_joined(
        inviter_client, inviter, room_id, invitee.user_id, attempts=TIMEOUT_SECONDS * 10
    )


async def test_create_room_invites_a_peer_user(pair: Pair) -> None:
    _, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await _invite_then_join(peyvand_client, alice, peer_client, bob)


async def test_peer_create_room_invites_a_peyvand_user(pair: Pair) -> None:
    _, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await _invite_then_join(peer_client, bob, peyvand_client, alice)


async def test_create_room_with_an_unreachable_invitee_fails_after_creating(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient
) -> None:
    """The invited server cannot be reached: the room exists (with its creator) but the
    request fails, as in Synapse, rather than pretending the invite was delivered."""
    alice = await peyvand_client.register()
    before = set(
        (await peyvand_client.request("GET", "joined_rooms", token=alice)).ok()["joined_rooms"]
    )
    response = await peyvand_client.request(
        "POST", "createRoom", json={"invite": ["@nobody:127.0.0.1:9"]}, token=alice
    )
    assert response.status == 502, response.body
    after = set(
        (await peyvand_client.request("GET", "joined_rooms", token=alice)).ok()["joined_rooms"]
    )
    assert len(after - before) == 1
