"""Thread replies received over federation (Client-Server API, "Threading", "Threaded
read receipts"): a fake homeserver's user answers in a thread of a Peyvand room; the
thread is listed by /threads and its reply counts for the Peyvand user in its thread
until a threaded receipt reads it."""

from __future__ import annotations

import asyncio
import json

from harness.client import MatrixClient
from harness.fake_server import FakeServer, q
from harness.federation import fake_peer_room, send_accepted
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.sync import sync

TIMEOUT_SECONDS = 20
_THREADED = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


async def test_received_thread_replies_are_listed_and_counted(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(peyvand_client, fake, "threads", "12")
        root = await say(peyvand_client, room_id, alice, "root")
        await say(peyvand_client, room_id, alice, "no thread yet")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "no thread yet")
        reply = fake.make_pdu(
            None,
            room_id,
            bob,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "remote reply",
                "m.relates_to": {"rel_type": "m.thread", "event_id": root},
            },
        )
        await send_accepted(fake, reply)

        listed = await peyvand_client.request(
            "GET", f"/_matrix/client/v1/rooms/{q(room_id)}/threads", token=alice
        )
        assert [e["event_id"] for e in listed.ok()["chunk"]] == [root]

        async def thread_counts() -> dict[str, object]:
            room = (await sync(peyvand_client, alice, timeout="0", filter=_THREADED))["rooms"][
                "join"
            ][room_id]
            counts: dict[str, object] = room.get("unread_thread_notifications", {})
            return counts

        assert await thread_counts() == {root: {"notification_count": 1, "highlight_count": 0}}
        path = f"rooms/{q(room_id)}/receipt/m.read/{q(reply.event_id)}"
        (await peyvand_client.request("POST", path, json={"thread_id": root}, token=alice)).ok()
        assert await thread_counts() == {}
