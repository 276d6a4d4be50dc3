"""Device lists of members who came from another server (End-to-End Encryption,
"Tracking the device list for a user"): a room joined over federation starts from the
state its server sent, stored as outliers; a later member event of a user who was in it
replaces one of those. A profile change of such a member is no device list change; their
leave is reported in ``left``, to /sync and ``GET /keys/changes`` alike."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.federation import Pair
from harness.rooms import create_room

TIMEOUT_SECONDS = 60


async def _sync(client: MatrixClient, account: Account, since: str | None = None) -> Any:
    params = {"timeout": "0", **({"since": since} if since else {})}
    return (await client.request("GET", "sync", token=account, params=params)).ok()


async def _once_in_timeline(
    client: MatrixClient, account: Account, since: str, room_id: str, membership: str, user: str
) -> dict[str, Any]:
    """The first incremental /sync from ``since`` whose timeline holds ``user``'s
    ``membership`` event."""
    for _ in range(200):
        answer = await _sync(client, account, since)
        room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
        if any(
            e["type"] == "m.room.member"
            and e["state_key"] == user
            and e["content"].get("membership") == membership
            and e["content"].get("displayname") != "Before"
            for e in room.get("timeline", {}).get("events", [])
        ):
            result: dict[str, Any] = answer
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user}'s {membership} never came")


async def test_a_member_from_before_the_join_changes_then_leaves(pair: Pair) -> None:
    _, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        carol = await peer_client.register()
        room_id = await create_room(peer_client, bob, preset="public_chat")
        path = f"rooms/{quote(room_id)}/state/m.room.member/{quote(carol.user_id)}"
        (await peer_client.request("POST", f"join/{quote(room_id)}", json={}, token=carol)).ok()
        before = {"membership": "join", "displayname": "Before"}
        (await peer_client.request("PUT", path, json=before, token=carol)).ok()
        server = pair.peer.server_name
        joined = f"join/{quote(room_id)}?server_name={quote(server)}"
        (await peyvand_client.request("POST", joined, json={}, token=alice)).ok()
        token = (await _sync(peyvand_client, alice))["next_batch"]

        after = {"membership": "join", "displayname": "After"}
        (await peer_client.request("PUT", path, json=after, token=carol)).ok()
        renamed = await _once_in_timeline(
            peyvand_client, alice, token, room_id, "join", carol.user_id
        )
        assert carol.user_id not in renamed["device_lists"]["changed"]

        token = renamed["next_batch"]
        left = f"rooms/{quote(room_id)}/leave"
        (await peer_client.request("POST", left, json={}, token=carol)).ok()
        answer = await _once_in_timeline(
            peyvand_client, alice, token, room_id, "leave", carol.user_id
        )
        assert answer["device_lists"]["left"] == [carol.user_id]
        params = {"from": token, "to": answer["next_batch"]}
        changes = await peyvand_client.request("GET", "keys/changes", token=alice, params=params)
        assert changes.ok()["left"] == [carol.user_id]
