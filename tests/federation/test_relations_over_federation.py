"""Relations received over federation are indexed like local ones (Client-Server API,
"Forming relationships between events"): a fake homeserver's user reacts to, replies in
a thread to and edits events of a Peyvand room; /relations lists the children and the
root's bundled aggregations count them, the edit of another sender's message is
ignored, and the remote user's edit of its own message is bundled."""

from __future__ import annotations

import asyncio
from typing import Any

from harness.client import MatrixClient
from harness.fake_server import FakeServer, q
from harness.federation import fake_peer_room, send_accepted
from harness.rooms import say
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 20
V1 = "/_matrix/client/v1"


async def test_received_relations_are_listed_and_bundled(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(peyvand_client, fake, "relations", "12")
        root = await say(peyvand_client, room_id, alice, "root")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "root")

        def relates(rel_type: str, parent: str, **extra: Any) -> dict[str, Any]:
            return {"m.relates_to": {"rel_type": rel_type, "event_id": parent, **extra}}

        reaction = fake.make_pdu(
            None, room_id, bob, "m.reaction", relates("m.annotation", root, key="👍")
        )
        await send_accepted(fake, reaction)
        reply = fake.make_pdu(
            None,
            room_id,
            bob,
            "m.room.message",
            {"msgtype": "m.text", "body": "remote reply", **relates("m.thread", root)},
        )
        await send_accepted(fake, reply)
        not_his = fake.make_pdu(
            None,
            room_id,
            bob,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "* hijacked",
                "m.new_content": {"msgtype": "m.text", "body": "hijacked"},
                **relates("m.replace", root),
            },
        )
        his_edit = fake.make_pdu(
            None,
            room_id,
            bob,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "* remote reply, edited",
                "m.new_content": {"msgtype": "m.text", "body": "remote reply, edited"},
                **relates("m.replace", reply.event_id),
            },
        )
        await send_accepted(fake, not_his)
        await send_accepted(fake, his_edit)

        listed = await peyvand_client.request(
            "GET",
            f"{V1}/rooms/{q(room_id)}/relations/{q(root)}",
            token=alice,
            params={"limit": "10"},
        )
        assert [e["event_id"] for e in listed.ok()["chunk"]] == [
            not_his.event_id,
            reply.event_id,
            reaction.event_id,
        ]
        served = await peyvand_client.request(
            "GET", f"rooms/{q(room_id)}/event/{q(root)}", token=alice
        )
        bundle = served.ok()["unsigned"]["m.relations"]
        assert "m.replace" not in bundle
        thread = bundle["m.thread"]
        assert (thread["count"], thread["current_user_participated"]) == (1, True)
        assert thread["latest_event"]["event_id"] == reply.event_id
        edit = thread["latest_event"]["unsigned"]["m.relations"]["m.replace"]
        assert edit["event_id"] == his_edit.event_id
