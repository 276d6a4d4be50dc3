"""Erasure and purges reach every process of a deployment (issue 21; docs/compliance.md,
"Erasure"): a message read on the client reader (so held in its event cache) and then
erased on the event writer is served redacted by the reader at once, not from the
reader's cached copy."""

from __future__ import annotations

import asyncio

from harness.client import MatrixClient, new_session
from harness.server import HomeserverProcess


async def test_an_erased_message_is_not_served_from_a_readers_cache(
    homeserver: HomeserverProcess,
) -> None:
    async with new_session() as session:
        client = MatrixClient(session, homeserver.base_url)
        alice = await client.register()
        bob = await client.register()
        room_id = (
            await client.request("POST", "createRoom", {"invite": [bob.user_id]}, token=alice)
        ).ok()["room_id"]
        (await client.request("POST", f"rooms/{room_id}/join", {}, token=bob)).ok()
        event_id = (
            await client.request(
                "PUT",
                f"rooms/{room_id}/send/m.room.message/t1",
                {"msgtype": "m.text", "body": "my phone number"},
                token=alice,
            )
        ).ok()["event_id"]
        path = f"rooms/{room_id}/event/{event_id}"
        for _ in range(50):  # bounded: until the reader has followed the writer
            read = await client.request("GET", path, token=bob)
            if read.status == 200:
                break
            await asyncio.sleep(0.1)
        assert read.ok()["content"]["body"] == "my phone number"  # now cached by the reader

        auth = {"type": "m.login.password", "password": alice.password,
                "identifier": {"type": "m.id.user", "user": alice.user_id}}  # fmt: skip
        first = await client.request("POST", "account/deactivate", {"erase": True}, token=alice)
        auth["session"] = first.body["session"]
        (
            await client.request(
                "POST", "account/deactivate", {"erase": True, "auth": auth}, token=alice
            )
        ).ok()

        erased = (await client.request("GET", path, token=bob)).ok()
        assert erased["content"] == {}
