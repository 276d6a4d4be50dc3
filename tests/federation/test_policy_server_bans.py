"""Moderation policy lists: a server rule over HTTP (docs/compliance.md). A private
federating Peyvand follows a local list; once it bans the fake peer (named
``localhost:<port>``, so the rule can tell it from Peyvand's ``127.0.0.1:<port>``), the
peer's PDUs are dropped from its transactions and its join and invite requests get 403."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from harness.admin import login_admin
from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.fake_server import FakeServer
from harness.server import HomeserverProcess, new_homeserver
from peyvand.types import ServerName

TIMEOUT_SECONDS = 30
POLICY_LISTS = "/_peyvand/admin/v1/policy_lists"


@pytest.fixture
def banning(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HomeserverProcess]:
    """A private federating Peyvand following its own ``#serverbans`` room."""
    server = new_homeserver(backend, request, tmp_path / "peyvand", federation=True)
    server.configure({"moderation.policy_rooms": f'["#serverbans:{server.server_name}"]'})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fake(banning: HomeserverProcess, tmp_path: Path) -> AsyncIterator[FakeServer]:
    async with FakeServer(tmp_path, peer=banning.server_name) as server:
        server.server_name = ServerName(f"localhost:{server.port}")
        yield server


async def _rules(client: MatrixClient, admin: Account, count: int) -> None:
    for _ in range(TIMEOUT_SECONDS * 10):
        listing = (await client.request("GET", POLICY_LISTS, token=admin)).ok()
        if listing["rooms"][0]["status"] == "joined" and len(listing["rules"]) == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the policy list never had {count} rules: {listing}")


async def test_a_banned_server_is_refused(banning: HomeserverProcess, fake: FakeServer) -> None:
    async with new_session() as session, asyncio.timeout(3 * TIMEOUT_SECONDS):
        client = MatrixClient(session, banning.base_url)
        admin = await login_admin(client, banning)
        alice = await client.register()
        list_id = (
            await client.request(
                "POST",
                "createRoom",
                json={"preset": "public_chat", "room_alias_name": "serverbans"},
                token=admin,
            )
        ).ok()["room_id"]
        await _rules(client, admin, 0)
        room_id = (
            await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
        ).ok()["room_id"]
        bob = fake.user(unique_localpart("bob"))
        await fake.join(room_id, bob)
        before = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "before"}
        )
        status, result = await fake.send_pdus([before])
        assert (status, result["pdus"]) == (200, {before.event_id: {}})

        rule = {"entity": "localhost", "recommendation": "m.ban", "reason": "abuse"}
        path = f"rooms/{quote(list_id)}/state/m.policy.rule.server/rule1"
        (await client.request("PUT", path, json=rule, token=admin)).ok()
        await _rules(client, admin, 1)

        after = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "after"}
        )
        status, result = await fake.send_pdus([after])
        assert status == 200 and after.event_id not in result["pdus"], result
        status, body = await fake.request(
            "GET",
            f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(fake.user('carol'))}",
            query={"ver": ["10", "11", "12"]},
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body
        status, body = await fake.request(
            "GET",
            f"/_matrix/federation/v1/state_ids/{quote(room_id)}",
            query={"event_id": before.event_id},
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body
        # A local user may not invite the banned server's users either.
        refused = await client.request(
            "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": bob}, token=alice
        )
        assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN", refused.body
        bodies = [
            e["content"].get("body")
            for e in (
                await client.request(
                    "GET",
                    f"rooms/{quote(room_id)}/messages",
                    token=alice,
                    params={"dir": "b", "limit": "50"},
                )
            ).ok()["chunk"]
        ]
    assert "before" in bodies and "after" not in bodies
    assert "Unhandled error" not in banning.log()
