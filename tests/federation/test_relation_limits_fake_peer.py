"""A received PDU whose relation is too long to index (a parent ID or ``rel_type`` over
255 bytes: appendices, "Event IDs", "Common Namespaced Identifier Grammar") is stored
and served as it is, not as a relation, so the room goes on: a fake homeserver's user
sends such PDUs, then one citing them; all are accepted, /messages serves them, and the
parent's /relations does not list them. Every backend (PostgreSQL indexes at most about
2,700 bytes a row)."""

from __future__ import annotations

import asyncio
import secrets

from harness.client import MatrixClient
from harness.fake_server import FakeServer, q
from harness.federation import fake_peer_room, send_accepted
from harness.rooms import say
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 20
V1 = "/_matrix/client/v1"


async def test_oversized_relations_received_are_stored_unindexed(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(peyvand_client, fake, "longrel", "12")
        root = await say(peyvand_client, room_id, alice, "root")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "root")

        relations = [
            {"rel_type": "m.thread", "event_id": "$" + secrets.token_urlsafe(4500)},
            {"event_id": "$" + secrets.token_urlsafe(4500)},
            {"rel_type": "org.example." + "a" * 4000, "event_id": root},
        ]
        huge = []
        for relates in relations:  # one after the other, each citing the one before
            pdu = fake.make_pdu(
                None,
                room_id,
                bob,
                "m.room.message",
                {"msgtype": "m.text", "body": "long", "m.relates_to": relates},
            )
            await send_accepted(fake, pdu)
            huge.append(pdu)
        # The next PDU cites the last of them as its prev_event.
        after = fake.make_pdu(
            None, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "after"}
        )
        await send_accepted(fake, after)
        assert after.prev_event_ids == [huge[-1].event_id]
        last = await say(peyvand_client, room_id, alice, "still working")

        messages = await peyvand_client.request(
            "GET",
            f"rooms/{q(room_id)}/messages",
            token=alice,
            params={"dir": "b", "limit": "5"},
        )
        chunk = messages.ok()["chunk"]
        assert [e["event_id"] for e in chunk] == [
            last,
            after.event_id,
            *reversed([p.event_id for p in huge]),
        ]
        assert [e["content"].get("m.relates_to") for e in chunk[2:]] == relations[::-1]
        listed = await peyvand_client.request(
            "GET", f"{V1}/rooms/{q(room_id)}/relations/{q(root)}", token=alice
        )
        assert listed.ok()["chunk"] == []
        served = await peyvand_client.request(
            "GET", f"rooms/{q(room_id)}/event/{q(root)}", token=alice
        )
        assert "m.relations" not in served.ok()["unsigned"]
