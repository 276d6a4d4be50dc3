"""Another server's refusal reaches the client as that server gave it (Synapse's
``to_synapse_error``): a user banned from a room of the other server who joins or knocks
through it gets 403 ``M_FORBIDDEN``, not 502 ``M_UNKNOWN``. Both directions, with a real
Synapse and with a second Peyvand.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response
from harness.federation import Pair
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 60
_KNOCK_RULES = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}


async def _room_banning(
    client: MatrixClient, owner: Account, banned: str, initial_state: list[object]
) -> str:
    """A room of ``owner``'s server (public, or knockable) with ``banned`` banned."""
    created = await client.request(
        "POST",
        "createRoom",
        json={"preset": "public_chat", "initial_state": initial_state},
        token=owner,
    )
    room_id = str(created.ok()["room_id"])
    ban = await client.request(
        "POST", f"rooms/{quote(room_id)}/ban", json={"user_id": banned}, token=owner
    )
    ban.ok()
    return room_id


def _assert_forbidden(response: Response) -> None:
    assert response.status == 403, (response.status, response.body)
    assert response.body["errcode"] == "M_FORBIDDEN", response.body


async def test_banned_user_joining_or_knocking_through_their_server_gets_403(pair: Pair) -> None:
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        for owner_client, owner, owner_server, guest_client, guest in (
            (peer_client, bob, peer, peyvand_client, alice),
            (peyvand_client, alice, peyvand, peer_client, bob),
        ):
            room_id = await _room_banning(owner_client, owner, guest.user_id, [])
            joined = await guest_client.request(
                "POST",
                f"join/{quote(room_id)}",
                json={},
                token=guest,
                params={"server_name": owner_server.server_name},
            )
            _assert_forbidden(joined)
            room_id = await _room_banning(owner_client, owner, guest.user_id, [_KNOCK_RULES])
            knocked = await guest_client.request(
                "POST",
                f"knock/{quote(room_id)}",
                json={},
                token=guest,
                params={"via": owner_server.server_name},
            )
            _assert_forbidden(knocked)


async def test_invite_refused_by_the_invited_server_keeps_its_errcode(
    peyvand_client: MatrixClient, peyvand_peer: HomeserverProcess
) -> None:
    """The invited server answers PUT /invite with 404 M_NOT_FOUND (no such user): the
    inviter's client gets 404 M_NOT_FOUND."""
    alice = await peyvand_client.register()
    created = await peyvand_client.request("POST", "createRoom", json={}, token=alice)
    room_id = str(created.ok()["room_id"])
    nobody = f"@nobody-here:{peyvand_peer.server_name}"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        invited = await peyvand_client.request(
            "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": nobody}, token=alice
        )
    assert invited.status == 404, (invited.status, invited.body)
    assert invited.body["errcode"] == "M_NOT_FOUND", invited.body
