"""POST /rooms/{roomId}/send/{eventType}, the send without a transaction ID that Synapse
serves besides the spec's PUT, over HTTP on every backend."""

from __future__ import annotations

from harness.client import MatrixClient


async def test_post_send_sends_each_time(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    body = {"msgtype": "m.text", "body": "hi"}
    path = f"rooms/{room_id}/send/m.room.message"
    first = (await client.request("POST", path, json=body, token=alice)).ok()["event_id"]
    second = (await client.request("POST", path, json=body, token=alice)).ok()["event_id"]
    assert first != second
    page = await client.request(
        "GET", f"rooms/{room_id}/messages", token=alice, params={"dir": "b", "limit": "2"}
    )
    assert [e["event_id"] for e in page.ok()["chunk"]] == [second, first]
    # The same rules as any send: a non-member may not.
    refused = await client.request("POST", path, json=body, token=bob)
    assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN"
