"""Redactions received over federation that are not (yet) in effect are not shown to
clients (rooms v3+ "Handling redactions": "they should not be sent to clients until both
the redaction event and the event the redaction affects have been received, and can be
validated"; "Otherwise, the server simply waits for a valid partner event to arrive where
it can then re-check the above").

A fake homeserver (``harness.fake_server``) joins a Peyvand room. Its user bob, with
power 0, redacts a Peyvand user's message: the redaction is stored but no client sees it,
by /messages, /event or /sync. Then bob redacts a message of his own that Peyvand has
not received yet: hidden too, until the message arrives, redacted, and with it the
redaction.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.client import Account, MatrixClient
from harness.fake_server import FakeServer, q
from harness.federation import fake_peer_room, send_accepted
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.sync import sync
from peyvand.events.hashes import compute_event_id

TIMEOUT_SECONDS = 20


async def timeline(client: MatrixClient, room_id: str, reader: Account) -> dict[str, Any]:
    """The room's latest 100 events by ID, as /messages serves them."""
    page = await client.request(
        "GET", f"rooms/{q(room_id)}/messages", token=reader, params={"dir": "b", "limit": "100"}
    )
    return {e["event_id"]: e for e in page.ok()["chunk"]}


async def synced_ids(client: MatrixClient, room_id: str, reader: Account) -> set[str]:
    body = await sync(client, reader)
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    return {e["event_id"] for e in events}


@pytest.mark.parametrize("room_version", ["10", "12"])
async def test_redactions_not_in_effect_are_kept_from_clients(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    fake: FakeServer,
    room_version: str,
) -> None:
    log_start = len(peyvand.log())
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(peyvand_client, fake, "pending", room_version)
        words = await say(peyvand_client, room_id, alice, "alice's words")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "alice's words")

        # Without the redact level, of another server's event: never in effect.
        refused = fake.make_pdu(None, room_id, bob, "m.room.redaction", {}, redacts=words)
        await send_accepted(fake, refused)
        events = await timeline(peyvand_client, room_id, alice)
        assert refused.event_id not in events
        assert events[words]["content"]["body"] == "alice's words"
        direct = await peyvand_client.request(
            "GET", f"rooms/{q(room_id)}/event/{q(refused.event_id)}", token=alice
        )
        assert direct.status == 404, direct.body
        assert refused.event_id not in await synced_ids(peyvand_client, room_id, alice)

        # Bob's own message, redacted before Peyvand has it: the redaction waits.
        message = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "bob's words"}
        )
        early = fake.make_pdu(None, room_id, bob, "m.room.redaction", {}, redacts=message.event_id)
        assert message.event_id not in early.prev_event_ids
        await send_accepted(fake, early)
        events = await timeline(peyvand_client, room_id, alice)
        assert early.event_id not in events and message.event_id not in events

        # The message arrives: redacted from the first, and the redaction shows.
        await send_accepted(fake, message)
        events = await timeline(peyvand_client, room_id, alice)
        assert events[message.event_id]["content"] == {}
        assert events[early.event_id]["redacts"] == message.event_id
        served = (
            await peyvand_client.request(
                "GET", f"rooms/{q(room_id)}/event/{q(message.event_id)}", token=alice
            )
        ).ok()
        assert served["content"] == {}
        assert served["unsigned"]["redacted_because"]["event_id"] == early.event_id
        synced = await sync(peyvand_client, alice)
        timeline_events = synced["rooms"]["join"][room_id]["timeline"]["events"]
        in_sync = {e["event_id"]: e for e in timeline_events}
        assert in_sync[message.event_id]["content"] == {}
    assert "Unhandled error" not in peyvand.log()[log_start:]


async def served_auth_chain(fake: FakeServer, room_id: str, at: str) -> dict[str, Any]:
    """The auth chain Peyvand serves with the state before ``at`` (GET /state), by ID."""
    status, answer = await fake.request(
        "GET", f"/_matrix/federation/v1/state/{q(room_id)}", query={"event_id": at}
    )
    assert status == 200, answer
    version = fake.rooms[room_id].room_version
    return {compute_event_id(e, version): e for e in answer["auth_chain"]}


async def test_redactions_reach_events_held_outside_the_timeline(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    fake: FakeServer,
) -> None:
    """Bob's earlier member events that Peyvand only holds as outliers (fetched as the
    auth events of a later one): a redaction of one already held applies to it, and a
    redaction received before the other applies once it is fetched. Either way the
    redaction is then shown, and the event is served redacted."""
    log_start = len(peyvand.log())
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(peyvand_client, fake, "outlier", "10")
        auth = fake.auth_events_for(room_id, "m.room.member", bob, bob, {"membership": "join"})
        joined = fake.rooms[room_id].state[("m.room.member", bob)]
        others = [a for a in auth if a != joined]

        def renamed(name: str, member_event: str) -> Any:
            """Bob's member event with display name ``name``, authorised by
            ``member_event``, on top of the room as the fake sees it."""
            return fake.make_pdu(
                None,
                room_id,
                bob,
                "m.room.member",
                {"membership": "join", "displayname": name},
                bob,
                auth_events=[*others, member_event],
            )

        # Held first, redacted after.
        held = renamed("held secret", joined)
        await send_accepted(fake, renamed("visible one", held.event_id))
        redaction = fake.make_pdu(None, room_id, bob, "m.room.redaction", {}, redacts=held.event_id)
        await send_accepted(fake, redaction)
        first = await say(peyvand_client, room_id, alice, "after the first rename")
        # Redacted first, held after.
        late = renamed("late secret", joined)
        early = fake.make_pdu(None, room_id, bob, "m.room.redaction", {}, redacts=late.event_id)
        await send_accepted(fake, early)
        assert early.event_id not in await timeline(peyvand_client, room_id, alice)
        await send_accepted(fake, renamed("visible two", late.event_id))

        second = await say(peyvand_client, room_id, alice, "after the second rename")
        events = await timeline(peyvand_client, room_id, alice)
        assert events[redaction.event_id]["redacts"] == held.event_id
        assert events[early.event_id]["redacts"] == late.event_id
        for outlier, at in ((held, first), (late, second)):
            chain = await served_auth_chain(fake, room_id, at)
            assert chain[outlier.event_id]["content"] == {"membership": "join"}
    assert "Unhandled error" not in peyvand.log()[log_start:]
