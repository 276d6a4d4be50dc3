"""Server ACLs over HTTP: once a room's ``m.room.server_acl`` denies a server, its PDUs
in ``/send`` are refused one by one and its requests about the room get 403
(Server-Server API, "Server Access Control Lists"). The fake peer is named by a hostname
(``localhost:<port>``) so the ACL can tell it from Peyvand (``127.0.0.1:<port>``)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from harness.client import MatrixClient
from harness.fake_server import FakeServer
from harness.server import HomeserverProcess
from peyvand.types import ServerName

TIMEOUT_SECONDS = 20
_txn = itertools.count()


@pytest.fixture
async def fake(peyvand: HomeserverProcess, tmp_path: Path) -> AsyncIterator[FakeServer]:
    async with FakeServer(tmp_path, peer=peyvand.server_name) as server:
        server.server_name = ServerName(f"localhost:{server.port}")
        yield server


async def test_a_denied_server_is_refused(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    alice = await peyvand_client.register()
    bob = fake.user(f"bob{next(_txn)}")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = (
            await peyvand_client.request(
                "POST", "createRoom", json={"preset": "public_chat"}, token=alice
            )
        ).ok()["room_id"]
        await fake.join(room_id, bob)
        before = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "allowed"}
        )
        status, result = await fake.send_pdus([before])
        assert (status, result["pdus"]) == (200, {before.event_id: {}})

        acl = {"allow": ["*"], "deny": ["localhost"], "allow_ip_literals": True}
        (
            await peyvand_client.request(
                "PUT", f"rooms/{quote(room_id)}/state/m.room.server_acl", json=acl, token=alice
            )
        ).ok()
        denied = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "denied"}
        )
        status, result = await fake.send_pdus([denied])
        assert status == 200
        assert "error" in result["pdus"][denied.event_id]
        status, body = await fake.request(
            "GET",
            f"/_matrix/federation/v1/state_ids/{quote(room_id)}",
            query={"event_id": before.event_id},
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await fake.request(
            "GET",
            f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(fake.user('carol'))}",
            query={"ver": ["10", "11", "12"]},
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        bodies = [
            e["content"].get("body")
            for e in (
                await peyvand_client.request(
                    "GET",
                    f"rooms/{quote(room_id)}/messages",
                    token=alice,
                    params={"dir": "b", "limit": "50"},
                )
            ).ok()["chunk"]
        ]
    assert "allowed" in bodies
    assert "denied" not in bodies
