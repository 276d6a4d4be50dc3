"""A room with a member on the peer (a real Synapse, or a second Peyvand) is upgraded on
Peyvand (Client-Server API, "Room Upgrades"), on every backend: the tombstone reaches the
peer's /sync and Peyvand's, the peer's user follows it into the replacement room (whose
create event names its predecessor and holds the old name and server ACL), and the local
alias points to the new room on both servers."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.federation import Pair
from harness.rooms import create_room, say
from harness.sync import invited_to, sync_until, wait_until_joined

TIMEOUT_SECONDS = 90
_names = itertools.count()


def _tombstone_in(room_id: str) -> Any:
    """A ``sync_until`` condition: the joined room's timeline or state shows a
    tombstone."""

    def done(response: dict[str, Any]) -> bool:
        room = response.get("rooms", {}).get("join", {}).get(room_id, {})
        events = room.get("timeline", {}).get("events", []) + room.get("state", {}).get(
            "events", []
        )
        return any(e["type"] == "m.room.tombstone" for e in events)

    return done


async def _state(client: MatrixClient, account: Account, room_id: str, key: str) -> Any:
    return (await client.request("GET", f"rooms/{quote(room_id)}/state/{key}", token=account)).ok()


async def test_the_peers_member_follows_the_upgrade(pair: Pair) -> None:
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    name = f"upgraded{next(_names)}x{alice.user_id[1:9]}"
    alias = f"#{name}:{peyvand.server_name}"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        old_room = await create_room(
            peyvand_client,
            alice,
            preset="public_chat",
            name="Before",
            room_alias_name=name,
            room_version="10",
        )
        invite = {"user_id": bob.user_id}
        path = f"rooms/{quote(old_room)}/invite"
        (await peyvand_client.request("POST", path, json=invite, token=alice)).ok()
        await sync_until(peer_client, bob, invited_to(old_room))
        (await peer_client.request("POST", f"join/{quote(old_room)}", json={}, token=bob)).ok()
        await wait_until_joined(peyvand_client, alice, old_room, bob.user_id, attempts=600)
        await say(peer_client, old_room, bob, "before the upgrade")
        acl = {"allow": ["*"], "deny": ["evil.example.org"], "allow_ip_literals": True}
        path = f"rooms/{quote(old_room)}/state/m.room.server_acl"
        (await peyvand_client.request("PUT", path, json=acl, token=alice)).ok()
        bob_sync = (await peer_client.request("GET", "sync", token=bob)).ok()["next_batch"]
        alice_sync = (await peyvand_client.request("GET", "sync", token=alice)).ok()["next_batch"]

        upgrade = {"new_version": "12"}
        path = f"rooms/{quote(old_room)}/upgrade"
        new_room = (await peyvand_client.request("POST", path, json=upgrade, token=alice)).ok()[
            "replacement_room"
        ]

        # The tombstone surfaces in both servers' /sync.
        await sync_until(peyvand_client, alice, _tombstone_in(old_room), since=alice_sync)
        await sync_until(peer_client, bob, _tombstone_in(old_room), since=bob_sync)
        tombstone = await _state(peer_client, bob, old_room, "m.room.tombstone")
        assert tombstone["replacement_room"] == new_room

        # Bob follows it: he joins the replacement room through Peyvand.
        join = f"join/{quote(new_room)}?server_name={quote(peyvand.server_name)}"
        (await peer_client.request("POST", join, json={}, token=bob)).ok()
        await wait_until_joined(peyvand_client, alice, new_room, bob.user_id, attempts=600)
        create = await _state(peer_client, bob, new_room, "m.room.create")
        assert create["room_version"] == "12"
        assert create["predecessor"]["room_id"] == old_room
        assert (await _state(peer_client, bob, new_room, "m.room.name"))["name"] == "Before"
        assert await _state(peer_client, bob, new_room, "m.room.server_acl") == acl
        await say(peer_client, new_room, bob, "after the upgrade")

        # The alias points to the new room, here and as the peer resolves it.
        directory = f"directory/room/{quote(alias, safe='')}"
        here = (await peyvand_client.request("GET", directory, token=alice)).ok()
        there = (await peer_client.request("GET", directory, token=bob)).ok()
        assert here["room_id"] == new_room and there["room_id"] == new_room
        # Bob can no longer talk in the old room; the old power levels say so.
        levels = await _state(peer_client, bob, old_room, "m.room.power_levels")
        assert levels["events_default"] >= 50
