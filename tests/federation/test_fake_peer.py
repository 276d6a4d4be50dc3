"""The fake homeserver harness (``harness.fake_server``) federates with a real Peyvand.

A Peyvand user creates a public room, a user of the fake server joins it through
make_join / send_join v2, and messages flow both ways: the fake's through ``/send`` into
Peyvand's timeline, Peyvand's into the fake's ``/send`` handler.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient
from harness.fake_server import FakeServer
from harness.federation import fake_peer_room
from harness.server import HomeserverProcess
from harness.timeline import message_bodies

TIMEOUT_SECONDS = 20
_txn = itertools.count()


async def _sync_until_body(
    client: MatrixClient, account: Account, room_id: str, body: str
) -> dict[str, Any]:
    """Long-poll /sync until ``body`` shows in the room's timeline; that event."""
    since: str | None = None
    while True:
        params = {"timeout": "1000"}
        if since is not None:
            params["since"] = since
        response = (await client.request("GET", "sync", token=account, params=params)).ok()
        room = response.get("rooms", {}).get("join", {}).get(room_id, {})
        for event in room.get("timeline", {}).get("events", []):
            if event.get("content", {}).get("body") == body:
                return dict(event)
        since = response["next_batch"]


@pytest.mark.parametrize("room_version", ["10", "12"])
async def test_fake_server_joins_a_peyvand_room_and_messages_flow_both_ways(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    fake: FakeServer,
    room_version: str,
) -> None:
    log_start = len(peyvand.log())
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, answer = await fake_peer_room(
            peyvand_client, fake, "bob", room_version, name="fake"
        )
        state_types = {e["type"] for e in answer["state"]}
        assert {"m.room.create", "m.room.join_rules", "m.room.power_levels"} <= state_types
        assert isinstance(answer["auth_chain"], list)
        if room_version != "12":  # v12 events never name the create event as an auth event
            assert "m.room.create" in {e["type"] for e in answer["auth_chain"]}
        known = set(fake.events)
        for event in answer["state"] + answer["auth_chain"]:
            assert set(event["auth_events"]) <= known  # the chain is complete
        members = (
            await peyvand_client.request(
                "GET", f"rooms/{quote(room_id)}/joined_members", token=alice
            )
        ).ok()["joined"]
        assert bob in members

        # The fake's message, through /send, reaches Peyvand's user.
        message = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "hi from fake"}
        )
        status, result = await fake.send_pdus([message])
        assert status == 200
        assert result["pdus"] == {message.event_id: {}}
        seen = await _sync_until_body(peyvand_client, alice, room_id, "hi from fake")
        assert seen["event_id"] == message.event_id
        assert seen["sender"] == bob

        # Peyvand's message reaches the fake's /send handler, signed by Peyvand.
        sent = (
            await peyvand_client.request(
                "PUT",
                f"rooms/{quote(room_id)}/send/m.room.message/t{next(_txn)}",
                json={"msgtype": "m.text", "body": "hi from peyvand"},
                token=alice,
            )
        ).ok()
        pdu = await fake.wait_for_pdu(
            lambda p: p.get("content", {}).get("body") == "hi from peyvand"
        )
        assert pdu["sender"] == alice.user_id
        assert pdu["room_id"] == room_id
        assert message.event_id in pdu["prev_events"]
        transactions = fake.requests("PUT", "/_matrix/federation/v1/send/")
        assert {t.origin for t in transactions} == {peyvand.server_name}
        assert sent["event_id"] in fake.events

        # And a reply from the fake, built on Peyvand's message, lands after it.
        reply = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "reply"}
        )
        assert reply.prev_event_ids == [sent["event_id"]]
        status, result = await fake.send_pdus([reply])
        assert (status, result["pdus"]) == (200, {reply.event_id: {}})
        await _sync_until_body(peyvand_client, alice, room_id, "reply")
    assert await message_bodies(peyvand_client, alice, room_id, limit=100) == [
        "hi from fake",
        "hi from peyvand",
        "reply",
    ]
    assert "Unhandled error" not in peyvand.log()[log_start:]
