"""Redactions received over federation take effect only under rooms v3+ "Handling
redactions".

The authorization rules accept any redaction a member may send; the receiving server
then applies it only if (1) its sender has the room's redact level, or (2) its sender is
on the server of the redacted event's sender. A fake homeserver (``harness.fake_server``)
joins a Peyvand room and sends redactions of bob, a member of its own: of Peyvand users'
events while bob has power 0 (not applied: the events keep their content, and clients are
not shown the redactions), of bob's own
events (applied), of an event of another room (never applied), and, once Peyvand's user
gave bob the redact level, of Peyvand users' events (applied).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.client import Account, MatrixClient
from harness.fake_server import FakeServer, q
from harness.federation import fake_peer_room, send_accepted
from harness.rooms import create_room, say
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 20


async def _event(client: MatrixClient, room_id: str, reader: Account, event_id: str) -> Any:
    response = await client.request("GET", f"rooms/{q(room_id)}/event/{q(event_id)}", token=reader)
    return response.ok()


async def _redact_as(fake: FakeServer, room_id: str, sender: str, target: str) -> str:
    """Send ``sender``'s redaction of ``target`` from the fake; its event ID (accepted:
    the authorization rules allow any member's redaction)."""
    redaction = fake.make_pdu(None, room_id, sender, "m.room.redaction", {}, redacts=target)
    await send_accepted(fake, redaction)
    return redaction.event_id


async def _until_redacted(
    client: MatrixClient, room_id: str, reader: Account, event_id: str
) -> Any:
    """``event_id`` once it shows redacted (redactions are applied after the commit that
    answered the transaction, so this is immediate; the loop only bounds a slow run)."""
    while True:
        event = await _event(client, room_id, reader, event_id)
        if event["content"] == {}:
            return event
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("room_version", ["10", "12"])
async def test_remote_redactions_apply_by_power_or_from_the_originals_server(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    fake: FakeServer,
    room_version: str,
) -> None:
    log_start = len(peyvand.log())
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(
            peyvand_client, fake, "redactor", room_version, name="original"
        )
        other_room = await create_room(peyvand_client, alice, room_version=room_version)
        words = await say(peyvand_client, room_id, alice, "alice's words")
        elsewhere = await say(peyvand_client, other_room, alice, "in another room")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "alice's words")
        name = fake.state_event(room_id, "m.room.name")
        name_id = fake.rooms[room_id].state[("m.room.name", "")]
        assert name["content"] == {"name": "original"}

        # Power 0, another server's events: stored, not applied, not shown to clients.
        for target in (words, name_id):
            redaction = await _redact_as(fake, room_id, bob, target)
            hidden = await peyvand_client.request(
                "GET", f"rooms/{q(room_id)}/event/{q(redaction)}", token=alice
            )
            assert hidden.status == 404, hidden.body
        assert (await _event(peyvand_client, room_id, alice, words))["content"] == {
            "msgtype": "m.text",
            "body": "alice's words",
        }
        named = await peyvand_client.request(
            "GET", f"rooms/{q(room_id)}/state/m.room.name", token=alice
        )
        assert named.ok() == {"name": "original"}

        # Bob's own event: same server, applied without power.
        own = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "bob's words"}
        )
        assert (await fake.send_pdus([own]))[1]["pdus"] == {own.event_id: {}}
        own_redaction = await _redact_as(fake, room_id, bob, own.event_id)
        redacted = await _until_redacted(peyvand_client, room_id, alice, own.event_id)
        assert redacted["unsigned"]["redacted_because"]["event_id"] == own_redaction

        # With the redact level (50 by default), applied; never into another room.
        levels = (
            await peyvand_client.request(
                "GET", f"rooms/{q(room_id)}/state/m.room.power_levels", token=alice
            )
        ).ok()
        levels["users"][bob] = 50
        (
            await peyvand_client.request(
                "PUT", f"rooms/{q(room_id)}/state/m.room.power_levels", json=levels, token=alice
            )
        ).ok()
        await fake.wait_for_pdu(
            lambda p: (
                p.get("type") == "m.room.power_levels"
                and bob in p.get("content", {}).get("users", {})
            )
        )
        await _redact_as(fake, room_id, bob, elsewhere)
        later = await say(peyvand_client, room_id, alice, "alice's later words")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "alice's later words")
        await _redact_as(fake, room_id, bob, later)
        await _until_redacted(peyvand_client, room_id, alice, later)
        # The earlier redactions stay without effect: they were sent without power, and
        # the power bob has now does not reach back to them.
        assert (await _event(peyvand_client, room_id, alice, words))["content"]["body"] == (
            "alice's words"
        )
    assert (await _event(peyvand_client, other_room, alice, elsewhere))["content"] == {
        "msgtype": "m.text",
        "body": "in another room",
    }
    assert "Unhandled error" not in peyvand.log()[log_start:]
