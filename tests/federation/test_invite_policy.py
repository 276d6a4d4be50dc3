"""Interconnect opt-in (docs/compliance.md): a Peyvand user's policy for invites from the
peer (a real Synapse, and a second Peyvand).

With ``hold-remote`` the peer's invite is kept as a message request: out of /sync, in the
requests list, an ordinary invite once accepted (and then joinable); rejecting it goes
through the peer, and opting in releases the rest. Local invites are not affected. With
``local-only`` (or the spec's ``m.invite_permission_config`` block) the peer's invite is
refused with ``M_INVITE_BLOCKED`` and nothing is kept; ``open`` is as before. Erasing a
user (docs/compliance.md, "Erasure") with an ordinary invite and a message request from
the peer pending declines both through the peer and deletes the stored invites, which
carry the invitee's profile as the peer saw it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from harness.admin import login_admin
from harness.client import Account, MatrixClient
from harness.database import query
from harness.federation import Pair
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess
from harness.sync import sync_until

TIMEOUT_SECONDS = 60
_POLICY = "/_peyvand/client/v1/invite_policy"
_REQUESTS = "/_peyvand/client/v1/invite_requests"


def _invites(response: dict[str, Any]) -> dict[str, Any]:
    return dict(response.get("rooms", {}).get("invite", {}))


async def _membership(client: MatrixClient, account: Account, room_id: str, user: str) -> str:
    found = await client.request(
        "GET", f"rooms/{quote(room_id)}/state/m.room.member/{quote(user)}", token=account
    )
    return str(found.body.get("membership")) if found.status == 200 else "none"


async def _wait_for_membership(
    client: MatrixClient, account: Account, room_id: str, user: str, membership: str
) -> None:
    for _ in range(TIMEOUT_SECONDS * 10):
        if await _membership(client, account, room_id, user) == membership:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user} never reached {membership} in {room_id}")


async def _set_policy(client: MatrixClient, account: Account, policy: str) -> dict[str, Any]:
    answer = await client.request("PUT", _POLICY, json={"policy": policy}, token=account)
    return dict(answer.ok())


async def _requests(client: MatrixClient, account: Account) -> dict[str, dict[str, Any]]:
    listed = (await client.request("GET", _REQUESTS, token=account)).ok()["requests"]
    return {r["room_id"]: r for r in listed}


async def _room_with_invite(client: MatrixClient, inviter: Account, invitee: str) -> str:
    """A room ``inviter`` creates on their server and invites ``invitee`` to."""
    room_id = str(
        (await client.request("POST", "createRoom", json={}, token=inviter)).ok()["room_id"]
    )
    invited = await client.request(
        "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": invitee}, token=inviter
    )
    invited.ok()
    return room_id


async def test_policy_endpoint_defaults_and_validation(peyvand_client: MatrixClient) -> None:
    alice = await peyvand_client.register()
    assert (await peyvand_client.request("GET", _POLICY, token=alice)).ok() == {
        "policy": "open",
        "default": "open",
    }
    bad = await peyvand_client.request("PUT", _POLICY, json={"policy": "maybe"}, token=alice)
    assert bad.status == 400 and bad.body["errcode"] == "M_INVALID_PARAM", bad.body
    assert (await _set_policy(peyvand_client, alice, "hold-remote")) == {
        "policy": "hold-remote",
        "released": [],
    }
    got = (await peyvand_client.request("GET", _POLICY, token=alice)).ok()
    assert got["policy"] == "hold-remote"
    assert await _requests(peyvand_client, alice) == {}
    missing = await peyvand_client.request(
        "POST", f"{_REQUESTS}/{quote('!nope:example.org')}/accept", json={}, token=alice
    )
    assert missing.status == 404 and missing.body["errcode"] == "M_NOT_FOUND", missing.body
    assert (await peyvand_client.request("GET", _POLICY)).status == 401


async def test_hold_remote_keeps_peer_invites_as_requests(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    peer: SynapseProcess | HomeserverProcess,
    peer_client: MatrixClient,
) -> None:
    alice = await peyvand_client.register()
    carol = await peyvand_client.register()
    bob = await peer_client.register()
    await _set_policy(peyvand_client, alice, "hold-remote")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        since = (await sync_until(peyvand_client, alice, lambda r: True))["next_batch"]
        remote_room = await _room_with_invite(peer_client, bob, alice.user_id)
        # The peer's invite succeeded (our server countersigned it) and is kept as a request.
        requests = await _requests(peyvand_client, alice)
        assert list(requests) == [remote_room]
        request = requests[remote_room]
        assert request["inviter"] == bob.user_id
        assert isinstance(request["ts"], int)
        member = [
            e
            for e in request["invite_state"]["events"]
            if e["type"] == "m.room.member" and e["state_key"] == alice.user_id
        ]
        assert member == [
            {
                "type": "m.room.member",
                "state_key": alice.user_id,
                "content": member[0]["content"],
                "sender": bob.user_id,
            }
        ]
        assert member[0]["content"]["membership"] == "invite"

        # A local invite still shows at once; the held one does not, now or from scratch.
        local_room = await _room_with_invite(peyvand_client, carol, alice.user_id)
        synced = await sync_until(
            peyvand_client, alice, lambda r: local_room in _invites(r), since=since
        )
        assert remote_room not in _invites(synced)
        since = synced["next_batch"]
        full = (await peyvand_client.request("GET", "sync", token=alice)).ok()
        assert local_room in _invites(full)
        assert remote_room not in _invites(full)
        assert remote_room not in full["rooms"]["join"]

        accepted = await peyvand_client.request(
            "POST", f"{_REQUESTS}/{quote(remote_room)}/accept", json={}, token=alice
        )
        assert accepted.ok() == {}
        synced = await sync_until(
            peyvand_client, alice, lambda r: remote_room in _invites(r), since=since
        )
        stripped = synced["rooms"]["invite"][remote_room]["invite_state"]["events"]
        assert any(
            e["type"] == "m.room.member" and e["state_key"] == alice.user_id for e in stripped
        )
        assert await _requests(peyvand_client, alice) == {}
        again = await peyvand_client.request(
            "POST", f"{_REQUESTS}/{quote(remote_room)}/accept", json={}, token=alice
        )
        assert again.status == 404, again.body

        (
            await peyvand_client.request("POST", f"join/{quote(remote_room)}", json={}, token=alice)
        ).ok()
        await _wait_for_membership(peer_client, bob, remote_room, alice.user_id, "join")
        (
            await peyvand_client.request("POST", f"join/{quote(local_room)}", json={}, token=alice)
        ).ok()
    assert "Unhandled error" not in peyvand.log()


async def test_rejecting_a_request_and_opting_in(pair: Pair) -> None:
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    await _set_policy(peyvand_client, alice, "hold-remote")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        since = (await sync_until(peyvand_client, alice, lambda r: True))["next_batch"]
        unwanted = await _room_with_invite(peer_client, bob, alice.user_id)
        wanted = await _room_with_invite(peer_client, bob, alice.user_id)
        assert set(await _requests(peyvand_client, alice)) == {unwanted, wanted}

        rejected = await peyvand_client.request(
            "POST",
            f"{_REQUESTS}/{quote(unwanted)}/reject",
            json={"reason": "no thanks"},
            token=alice,
        )
        assert rejected.ok() == {}
        await _wait_for_membership(peer_client, bob, unwanted, alice.user_id, "leave")
        assert list(await _requests(peyvand_client, alice)) == [wanted]

        # Opting in releases what is still held.
        assert await _set_policy(peyvand_client, alice, "open") == {
            "policy": "open",
            "released": [wanted],
        }
        synced = await sync_until(
            peyvand_client, alice, lambda r: wanted in _invites(r), since=since
        )
        assert unwanted not in _invites(synced)
        assert await _requests(peyvand_client, alice) == {}

        # Open: a new invite shows at once, as before.
        later = await _room_with_invite(peer_client, bob, alice.user_id)
        await sync_until(
            peyvand_client, alice, lambda r: later in _invites(r), since=synced["next_batch"]
        )
        assert await _requests(peyvand_client, alice) == {}
    assert "Unhandled error" not in peyvand.log()


async def test_local_only_refuses_peer_invites(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    peer: SynapseProcess | HomeserverProcess,
    peer_client: MatrixClient,
) -> None:
    alice = await peyvand_client.register()
    carol = await peyvand_client.register()
    bob = await peer_client.register()
    await _set_policy(peyvand_client, alice, "local-only")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = str(
            (await peer_client.request("POST", "createRoom", json={}, token=bob)).ok()["room_id"]
        )
        refused = await peer_client.request(
            "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": alice.user_id}, token=bob
        )
        assert refused.status >= 400, refused.body
        if isinstance(peer, SynapseProcess):  # Synapse passes the invited server's error on
            assert refused.body["errcode"] == "M_INVITE_BLOCKED", refused.body
        assert await _membership(peer_client, bob, room_id, alice.user_id) == "none"
        assert await _requests(peyvand_client, alice) == {}

        local_room = await _room_with_invite(peyvand_client, carol, alice.user_id)
        full = await sync_until(peyvand_client, alice, lambda r: local_room in _invites(r))
        assert room_id not in _invites(full)

        # The spec's invite permission config blocks whatever the policy.
        await _set_policy(peyvand_client, alice, "open")
        config_path = f"user/{quote(alice.user_id)}/account_data/m.invite_permission_config"
        block = {"default_action": "block"}
        (await peyvand_client.request("PUT", config_path, json=block, token=alice)).ok()
        blocked = await peer_client.request(
            "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": alice.user_id}, token=bob
        )
        assert blocked.status >= 400, blocked.body
        (await peyvand_client.request("PUT", config_path, json={}, token=alice)).ok()

        # Open again: the invite goes through and shows.
        (
            await peer_client.request(
                "POST",
                f"rooms/{quote(room_id)}/invite",
                json={"user_id": alice.user_id},
                token=bob,
            )
        ).ok()
        await sync_until(
            peyvand_client, alice, lambda r: room_id in _invites(r), since=full["next_batch"]
        )
    assert "Unhandled error" not in peyvand.log()


async def test_erasure_declines_and_forgets_remote_invites(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    peer: SynapseProcess | HomeserverProcess,
    peer_client: MatrixClient,
) -> None:
    admin = await login_admin(peyvand_client, peyvand)
    alice = await peyvand_client.register()
    bob = await peer_client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        invited = await _room_with_invite(peer_client, bob, alice.user_id)
        await _set_policy(peyvand_client, alice, "hold-remote")
        requested = await _room_with_invite(peer_client, bob, alice.user_id)
        assert list(await _requests(peyvand_client, alice)) == [requested]
        stored = await query(
            peyvand, "SELECT room_id FROM remote_invites WHERE user_id = $1", alice.user_id
        )
        assert {row[0] for row in stored} == {invited, requested}

        report = (
            await peyvand_client.request(
                "POST",
                f"/_peyvand/admin/v1/users/{alice.user_id}/deactivate",
                json={"erase": True},
                token=admin,
            )
        ).ok()
        assert report["rooms_left"] == 2
        for room_id in (invited, requested):
            await _wait_for_membership(peer_client, bob, room_id, alice.user_id, "leave")
    left = await query(
        peyvand, "SELECT count(*) FROM remote_invites WHERE user_id = $1", alice.user_id
    )
    assert left == [(0,)]
    assert "Unhandled error" not in peyvand.log()
