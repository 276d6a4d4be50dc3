"""Relations that must not cost more than a page (Client-Server API, "Forming
relationships between events"), on every backend: a parent ID or ``rel_type`` too long
to index is no relation, and the event is still stored and served."""

from __future__ import annotations

import itertools
import secrets
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response
from harness.rooms import say, shared_room

V1 = "/_matrix/client/v1"

_txn = itertools.count()


async def send(
    client: MatrixClient, room_id: str, account: Account, content: dict[str, Any]
) -> Response:
    """``account`` sends an ``m.room.message`` of ``content``; the response (not checked)."""
    return await client.request(
        "PUT",
        f"rooms/{quote(room_id)}/send/m.room.message/limits{next(_txn)}",
        json={"msgtype": "m.text", "body": "x", **content},
        token=account,
    )


def huge_event_id() -> str:
    """An event ID far longer than 255 bytes: one that cannot be held in the B-tree
    indexes of ``events.relates_to`` on PostgreSQL (about 2,700 bytes at most)."""
    return "$" + secrets.token_urlsafe(4500)


async def test_oversized_relations_are_stored_unindexed(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    root = await say(client, room_id, alice, "root")

    # No rel_type: no relation (as Synapse), whatever the parent's length.
    plain_relates = {"event_id": huge_event_id()}
    plain = await send(client, room_id, bob, {"m.relates_to": plain_relates})
    plain_id = plain.ok()["event_id"]
    # A parent ID over 255 bytes names no event: refused as Synapse refuses an unknown one.
    unknown = await send(
        client,
        room_id,
        bob,
        {"m.relates_to": {"rel_type": "m.thread", "event_id": huge_event_id()}},
    )
    assert (unknown.status, unknown.body["errcode"]) == (400, "M_UNKNOWN")
    # A rel_type over 255 bytes is accepted as Synapse accepts it, but not indexed.
    odd_relates = {"rel_type": "org.example." + "a" * 4000, "event_id": root}
    odd = await send(client, room_id, bob, {"m.relates_to": odd_relates})
    odd_id = odd.ok()["event_id"]

    for event_id, relates in ((plain_id, plain_relates), (odd_id, odd_relates)):
        served = await client.request(
            "GET", f"rooms/{quote(room_id)}/event/{quote(event_id)}", token=alice
        )
        assert served.ok()["content"]["m.relates_to"] == relates
    listed = await client.request(
        "GET", f"{V1}/rooms/{quote(room_id)}/relations/{quote(root)}", token=alice
    )
    assert listed.ok()["chunk"] == []
    after = await say(client, room_id, alice, "still working")
    messages = await client.request(
        "GET", f"rooms/{quote(room_id)}/messages", token=bob, params={"dir": "b", "limit": "3"}
    )
    assert [e["event_id"] for e in messages.ok()["chunk"]] == [after, odd_id, plain_id]
