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
from peyvand.storage.relations import MAX_REFERENCES

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


async def relations_page(
    client: MatrixClient, account: Account, room_id: str, parent: str, **params: str
) -> Any:
    """One page of ``GET /relations/{parent}`` with ``params``; its body (200 checked)."""
    response = await client.request(
        "GET",
        f"{V1}/rooms/{quote(room_id)}/relations/{quote(parent)}",
        token=account,
        params=params,
    )
    return response.ok()


async def test_bundled_references_are_bounded(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    parent = await say(client, room_id, alice, "much referenced")
    references = [
        (
            await send(
                client,
                room_id,
                bob,
                {"m.relates_to": {"rel_type": "m.reference", "event_id": parent}},
            )
        ).ok()["event_id"]
        for _ in range(MAX_REFERENCES + 1)
    ]

    served = await client.request(
        "GET", f"rooms/{quote(room_id)}/event/{quote(parent)}", token=alice
    )
    chunk = served.ok()["unsigned"]["m.relations"]["m.reference"]["chunk"]
    assert chunk == [{"event_id": r} for r in references[:MAX_REFERENCES]]
    # /relations still lists every one.
    listed = await relations_page(client, alice, room_id, parent, limit="100")
    assert [e["event_id"] for e in listed["chunk"]] == references[::-1]


async def test_limit_zero_pages_on(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    root = await say(client, room_id, alice, "root")
    replies = [
        await say(
            client,
            room_id,
            bob,
            f"reply {i}",
            **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}},
        )
        for i in range(3)
    ]
    for recurse in ("false", "true"):
        seen: list[str] = []
        tokens: list[str] = []
        params: dict[str, str] = {"limit": "0", "recurse": recurse}
        for _ in range(10):
            page = await relations_page(client, alice, room_id, root, **params)
            seen += [e["event_id"] for e in page["chunk"]]
            if "next_batch" not in page:
                break
            assert page["next_batch"] not in tokens
            tokens.append(page["next_batch"])
            params["from"] = page["next_batch"]
        assert seen == replies[::-1]


async def test_recursive_pages_cover_the_tree(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    root = await say(client, room_id, alice, "root")
    thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    first = await say(client, room_id, bob, "first", **thread)
    second = await say(client, room_id, bob, "second", **thread)
    # Page one holds ``second``: its token is at ``first``.
    middle = (await relations_page(client, alice, room_id, root, limit="1"))["next_batch"]
    # After the token: a reaction to a reply older than it, and a newer reply.
    late = (
        await send(
            client,
            room_id,
            alice,
            {"m.relates_to": {"rel_type": "m.reference", "event_id": first}},
        )
    ).ok()["event_id"]
    third = await say(client, room_id, bob, "third", **thread)
    everything = [first, second, late, third]

    backwards: list[str] = []
    params: dict[str, str] = {"limit": "2", "recurse": "true"}
    for _ in range(10):
        page = await relations_page(client, alice, room_id, root, **params)
        backwards += [e["event_id"] for e in page["chunk"]]
        if "next_batch" not in page:
            break
        params["from"] = page["next_batch"]
    assert backwards == everything[::-1]
    # Forwards from ``first``: the new reference to it is listed, though its parent is
    # not after the token.
    forwards = await relations_page(
        client, alice, room_id, root, limit="10", recurse="true", dir="f", **{"from": middle}
    )
    assert [e["event_id"] for e in forwards["chunk"]] == [second, late, third]
    # Backwards from it: nothing after it.
    older = await relations_page(client, alice, room_id, root, recurse="true", **{"from": middle})
    assert [e["event_id"] for e in older["chunk"]] == [first]
