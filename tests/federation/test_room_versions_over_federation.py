"""Rooms of versions 1 to 9 over federation ("Room Versions"): a room the peer (a real
Synapse, or a second Peyvand) created in each version is joined from Peyvand, and a room
Peyvand created in each version is joined by the peer's user; messages flow both ways.

The versions run concurrently against the session's servers, one room each.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient
from harness.federation import Pair, change_state_at_once, converged_state
from harness.rooms import create_room
from harness.timeline import message_bodies

VERSIONS = [str(n) for n in range(1, 10)]
TIMEOUT_SECONDS = 120
_txn = itertools.count()


async def _send(client: MatrixClient, account: Account, room_id: str, body: str) -> str:
    path = f"rooms/{quote(room_id)}/send/m.room.message/v{next(_txn)}"
    sent = await client.request(
        "PUT", path, json={"msgtype": "m.text", "body": body}, token=account
    )
    return str(sent.ok()["event_id"])


async def _wait_for(client: MatrixClient, account: Account, room_id: str, body: str) -> None:
    """Poll /messages until ``body`` shows (at most TIMEOUT_SECONDS)."""
    for _ in range(TIMEOUT_SECONDS * 5):
        if body in await message_bodies(client, account, room_id, limit=50):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{body!r} never arrived")


async def _room_version(client: MatrixClient, account: Account, room_id: str) -> Any:
    create = await client.request(
        "GET", f"rooms/{quote(room_id)}/state/m.room.create", token=account
    )
    return create.ok().get("room_version")


async def _join_via(
    client: MatrixClient, account: Account, room_id: str, server_name: str, version: str
) -> None:
    """``account`` joins ``room_id`` through ``server_name``; the room it joined has
    ``version``."""
    joined = await client.request(
        "POST",
        f"join/{quote(room_id)}",
        params={"server_name": server_name},
        json={},
        token=account,
    )
    assert joined.ok()["room_id"] == room_id, (version, joined.body)
    assert await _room_version(client, account, room_id) == version


async def _conversation(
    room_id: str,
    first: tuple[MatrixClient, Account],
    second: tuple[MatrixClient, Account],
    tag: str,
) -> None:
    """``second`` answers ``first``, then ``first`` answers; each sees the other's."""
    (c1, a1), (c2, a2) = first, second
    await _send(c2, a2, room_id, f"{tag}: hello from the joiner")
    await _wait_for(c1, a1, room_id, f"{tag}: hello from the joiner")
    await _send(c1, a1, room_id, f"{tag}: welcome")
    await _wait_for(c2, a2, room_id, f"{tag}: welcome")


async def _each_version(one: Callable[[str], Awaitable[None]]) -> None:
    """Run ``one`` for every version at once; fail naming every version that failed."""
    async with asyncio.timeout(TIMEOUT_SECONDS):
        results = await asyncio.gather(*(one(v) for v in VERSIONS), return_exceptions=True)
    failed = {v: repr(r) for v, r in zip(VERSIONS, results, strict=True) if r is not None}
    assert not failed, failed


async def test_peer_rooms_of_versions_1_to_9_are_joined_from_peyvand(pair: Pair) -> None:
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()

    async def one(version: str) -> None:
        room_id = await create_room(
            peer_client, bob, preset="public_chat", room_version=version, name=f"v{version}"
        )
        await _send(peer_client, bob, room_id, f"v{version}: before the join")
        await _join_via(peyvand_client, alice, room_id, peer.server_name, version)
        await _conversation(room_id, (peer_client, bob), (peyvand_client, alice), f"v{version}")

    await _each_version(one)
    assert "Unhandled error" not in peyvand.log()


async def test_peyvand_rooms_of_versions_1_to_9_are_joined_by_the_peer(pair: Pair) -> None:
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()

    async def one(version: str) -> None:
        room_id = await create_room(
            peyvand_client, alice, preset="public_chat", room_version=version, name=f"v{version}"
        )
        create = (
            await peyvand_client.request(
                "GET", f"rooms/{quote(room_id)}/state/m.room.create", token=alice
            )
        ).ok()
        assert create == {"room_version": version, "creator": alice.user_id}
        await _join_via(peer_client, bob, room_id, peyvand.server_name, version)
        await _conversation(room_id, (peyvand_client, alice), (peer_client, bob), f"v{version}")

    await _each_version(one)
    assert "Unhandled error" not in peyvand.log()


@pytest.mark.parametrize("version", ["1", "2"])
async def test_concurrent_state_changes_converge_in_old_rooms(
    version: str,
    pair: Pair,
) -> None:
    """Both servers change the state of a room the peer created at once; state resolution
    (v1 in a version 1 room, v2 in version 2) gives both the same state afterwards."""
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = str(
            (
                await peer_client.request(
                    "POST",
                    "createRoom",
                    json={"preset": "public_chat", "room_version": version},
                    token=bob,
                )
            ).ok()["room_id"]
        )
        joined = await peyvand_client.request(
            "POST",
            f"join/{quote(room_id)}",
            params={"server_name": peer.server_name},
            json={},
            token=alice,
        )
        joined.ok()
        path = f"rooms/{quote(room_id)}/state/m.room.power_levels"
        power = (await peer_client.request("GET", path, token=bob)).ok()
        power["users"][alice.user_id] = 100
        (await peer_client.request("PUT", path, json=power, token=bob)).ok()
        await _send(peer_client, bob, room_id, "alice is an admin now")
        await _wait_for(peyvand_client, alice, room_id, "alice is an admin now")

        await change_state_at_once(pair, room_id, power)
        await _send(peyvand_client, alice, room_id, "after (peyvand)")
        await _send(peer_client, bob, room_id, "after (peer)")
        for client, account in ((peyvand_client, alice), (peer_client, bob)):
            await _wait_for(client, account, room_id, "after (peyvand)")
            await _wait_for(client, account, room_id, "after (peer)")
        on_peyvand, on_peer = await converged_state(
            pair, room_id, attempts=TIMEOUT_SECONDS * 5, interval=0.2
        )
    assert on_peyvand == on_peer
    assert on_peyvand[("m.room.name", "")] == {"name": "renamed on peyvand"}
    assert on_peyvand[("m.room.power_levels", "")]["events_default"] == 10
    assert on_peyvand[("m.room.topic", "")]["topic"] in ("from peyvand", "from the peer")
    assert "Unhandled error" not in peyvand.log()
