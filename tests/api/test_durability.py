"""A send that returned 200 is durable: a ``kill -9`` right after the last response loses
nothing (the event, its place in the timeline, and its transaction ID all survive)."""

from __future__ import annotations

import asyncio

from harness.client import Account, MatrixClient, new_session
from harness.server import HomeserverProcess

MESSAGES = 50


async def test_kill_right_after_concurrent_sends_loses_nothing(
    private_homeserver: HomeserverProcess,
) -> None:
    server = private_homeserver
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        alice: Account = await client.register()
        bob: Account = await client.register()
        body = {"preset": "public_chat", "room_version": "12"}
        room_id = (await client.request("POST", "createRoom", json=body, token=alice)).ok()[
            "room_id"
        ]
        (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()

        async def send(i: int) -> tuple[str, str]:
            sender = alice if i % 2 else bob
            txn = f"durable-{i}"
            response = await client.request(
                "PUT",
                f"rooms/{room_id}/send/m.room.message/{txn}",
                json={"msgtype": "m.text", "body": f"message {i}"},
                token=sender,
            )
            return txn, response.ok()["event_id"]

        results = await asyncio.gather(*(send(i) for i in range(MESSAGES)))
        server.kill()  # as soon as the last 200 has arrived: no shutdown code runs
        await asyncio.to_thread(server.start)

        sent = {event_id for _, event_id in results}
        assert len(sent) == MESSAGES
        for i, (_, event_id) in enumerate(results):
            event = await client.request("GET", f"rooms/{room_id}/event/{event_id}", token=alice)
            assert event.ok()["content"]["body"] == f"message {i}"
        messages = await client.request(
            "GET",
            f"rooms/{room_id}/messages",
            token=bob,
            params={"limit": "200", "filter": '{"types": ["m.room.message"]}'},
        )
        in_timeline = [e["event_id"] for e in messages.ok()["chunk"]]
        assert set(in_timeline) == sent and len(in_timeline) == MESSAGES
        sync = await client.request(
            "GET", "sync", token=alice, params={"filter": '{"room": {"timeline": {"limit": 5}}}'}
        )
        timeline = sync.ok()["rooms"]["join"][room_id]["timeline"]["events"]
        assert [e["event_id"] for e in timeline] == in_timeline[:5][::-1]

        # The transaction IDs survived too: a client retrying after the crash gets the same
        # event back instead of a duplicate.
        txn, event_id = results[1]
        retried = await client.request(
            "PUT",
            f"rooms/{room_id}/send/m.room.message/{txn}",
            json={"msgtype": "m.text", "body": "message 1"},
            token=alice,
        )
        assert retried.ok()["event_id"] == event_id
        # And the room takes new events on top of the recovered ones.
        after = await client.request(
            "PUT",
            f"rooms/{room_id}/send/m.room.message/after-restart",
            json={"msgtype": "m.text", "body": "after"},
            token=bob,
        )
        new_id = after.ok()["event_id"]
        latest = await client.request(
            "GET", f"rooms/{room_id}/messages", token=bob, params={"limit": "1"}
        )
        assert [e["event_id"] for e in latest.ok()["chunk"]] == [new_id]
    assert "Unhandled error" not in server.log()
