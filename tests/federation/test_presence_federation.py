"""Presence over federation with the fake peer (Server-Server API, "Presence"): a local
change goes as an ``m.presence`` EDU to a server sharing a room, and a pushed state of a
remote user sharing a room reaches local syncs; pushes for users of another server, or
of users sharing no room, are dropped. And both ways with a real Synapse and a second
Peyvand."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient
from harness.fake_server import FEDERATION_V1, FakeServer
from harness.federation import Pair
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 20
_names = itertools.count()


@pytest.fixture
async def fake(peyvand: HomeserverProcess, tmp_path: Path) -> AsyncIterator[FakeServer]:
    async with FakeServer(tmp_path, peer=peyvand.server_name) as server:
        yield server


def _presence_pushes(fake: FakeServer) -> list[dict[str, Any]]:
    pushes: list[dict[str, Any]] = []
    for seen in fake.requests("PUT", f"{FEDERATION_V1}/send/"):
        body = seen.body if isinstance(seen.body, dict) else {}
        for edu in body.get("edus", []):
            if edu.get("edu_type") == "m.presence":
                pushes.extend(edu["content"]["push"])
    return pushes


async def _sync_presence(
    client: MatrixClient, account: Account, since: str, sender: str
) -> dict[str, Any]:
    """Long-poll /sync from ``since`` until ``sender``'s presence arrives; its content."""
    while True:
        params = {"timeout": "1000", "since": since, "set_presence": "offline"}
        response = (await client.request("GET", "sync", token=account, params=params)).ok()
        for event in response["presence"]["events"]:
            if event["sender"] == sender:
                content: dict[str, Any] = event["content"]
                return content
        since = response["next_batch"]


async def test_presence_goes_both_ways_with_a_server_sharing_a_room(
    peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    alice = await peyvand_client.register()
    bob = fake.user(f"bob{next(_names)}")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        created = await peyvand_client.request(
            "POST", "createRoom", json={"preset": "public_chat"}, token=alice
        )
        room_id = created.ok()["room_id"]
        status = f"presence/{alice.user_id}/status"
        early = {"presence": "online", "status_msg": "before"}
        (await peyvand_client.request("PUT", status, json=early, token=alice)).ok()
        await fake.join(room_id, bob)

        # A server newly sharing a room gets the local members' presence (within a
        # sweep, 5 s).
        for _ in range(TIMEOUT_SECONDS * 10):
            if any(p.get("status_msg") == "before" for p in _presence_pushes(fake)):
                break
            await asyncio.sleep(0.1)
        joined_push = next(p for p in _presence_pushes(fake) if p.get("status_msg") == "before")
        assert (joined_push["user_id"], joined_push["presence"]) == (alice.user_id, "online")

        # Outbound: alice's change is pushed to the fake, which shares the room.
        body = {"presence": "unavailable", "status_msg": "lunch"}
        (await peyvand_client.request("PUT", status, json=body, token=alice)).ok()
        for _ in range(TIMEOUT_SECONDS * 10):
            if any(p.get("status_msg") == "lunch" for p in _presence_pushes(fake)):
                break
            await asyncio.sleep(0.1)
        pushed = next(p for p in _presence_pushes(fake) if p.get("status_msg") == "lunch")
        assert pushed["user_id"] == alice.user_id
        assert pushed["presence"] == "unavailable"
        assert isinstance(pushed["last_active_ago"], int)

        # Inbound: bob's pushed state reaches alice's sync and GET; a push for a user of
        # another server, and one for a fake user sharing no room, are dropped.
        params = {"timeout": "0", "set_presence": "offline"}
        token = (await peyvand_client.request("GET", "sync", token=alice, params=params)).ok()
        lonely = fake.user(f"lonely{next(_names)}")
        edu = {
            "edu_type": "m.presence",
            "content": {
                "push": [
                    {
                        "user_id": bob,
                        "presence": "online",
                        "last_active_ago": 5000,
                        "currently_active": True,
                        "status_msg": "hi",
                    },
                    {"user_id": alice.user_id, "presence": "offline", "last_active_ago": 0},
                    {"user_id": lonely, "presence": "online", "last_active_ago": 0},
                ]
            },
        }
        status_code, _ = await fake.send_pdus([], [edu])
        assert status_code == 200
        content = await _sync_presence(peyvand_client, alice, token["next_batch"], bob)
        assert content["presence"] == "online"
        assert content["status_msg"] == "hi"
        assert content["currently_active"] is True
        assert content["last_active_ago"] >= 5000
        remote = await peyvand_client.request("GET", f"presence/{bob}/status", token=alice)
        assert remote.ok()["presence"] == "online"
        own = await peyvand_client.request("GET", status, token=alice)
        assert own.ok()["presence"] == "unavailable"  # not the fake's to say
        unknown = await peyvand_client.request("GET", f"presence/{lonely}/status", token=alice)
        assert unknown.status == 403


async def _await_presence(
    client: MatrixClient, account: Account, sender: str, status_msg: str
) -> dict[str, Any]:
    """Long-poll /sync (from an initial one) until ``sender``'s presence carries
    ``status_msg``; its content."""
    since: str | None = None
    while True:
        params = {"timeout": "1000", "set_presence": "offline"}
        if since is not None:
            params["since"] = since
        response = (await client.request("GET", "sync", token=account, params=params)).ok()
        for event in response.get("presence", {}).get("events", []):
            if event["sender"] == sender and event["content"].get("status_msg") == status_msg:
                content: dict[str, Any] = event["content"]
                return content
        since = response["next_batch"]


async def test_presence_with_another_real_server(pair: Pair) -> None:
    """With a real Synapse (and a second Peyvand): each side's status reaches the other's
    /sync through m.presence EDUs."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(60):
        created = await peyvand_client.request(
            "POST", "createRoom", json={"preset": "public_chat"}, token=alice
        )
        room_id = created.ok()["room_id"]
        via = {"via": peyvand.server_name, "server_name": peyvand.server_name}
        joined = await peer_client.request(
            "POST", f"join/{quote(room_id)}", json={}, token=bob, params=via
        )
        joined.ok()
        mine = {"presence": "online", "status_msg": "from peyvand"}
        path = f"presence/{quote(alice.user_id)}/status"
        (await peyvand_client.request("PUT", path, json=mine, token=alice)).ok()
        seen = await _await_presence(peer_client, bob, alice.user_id, "from peyvand")
        assert seen["presence"] == "online"
        theirs = {"presence": "unavailable", "status_msg": "from the peer"}
        path = f"presence/{quote(bob.user_id)}/status"
        (await peer_client.request("PUT", path, json=theirs, token=bob)).ok()
        got = await _await_presence(peyvand_client, alice, bob.user_id, "from the peer")
        assert got["presence"] == "unavailable"
