"""Threads over HTTP against a real Peyvand (Client-Server API, "Threading": "Querying
threads in a room", threads_list.yaml): the list ordered by latest activity and paged,
``include=participated``, history visibility, purged replies, and bad input."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

from harness.admin import login_admin
from harness.client import Account, MatrixClient, Response
from harness.rooms import create_room, say
from harness.server import HomeserverProcess

DAY_MS = 86_400_000


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def reply(client: MatrixClient, room_id: str, account: Account, root: str, text: str) -> str:
    """``account`` answers in the thread of ``root``; the answer's event ID."""
    relation = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    return await say(client, room_id, account, text, **relation)


async def threads(client: MatrixClient, account: Account, room_id: str, **params: str) -> Response:
    return await client.request(
        "GET", f"/_matrix/client/v1/rooms/{quote(room_id)}/threads", token=account, params=params
    )


async def roots(client: MatrixClient, account: Account, room_id: str, **params: str) -> list[str]:
    """The thread roots listed for ``account``, following ``next_batch`` to the end."""
    listed: list[str] = []
    for _ in range(20):
        page: dict[str, Any] = (await threads(client, account, room_id, **params)).ok()
        listed += [event["event_id"] for event in page["chunk"]]
        if "next_batch" not in page:
            return listed
        params["from"] = page["next_batch"]
    raise AssertionError("next_batch never ended")


async def join(client: MatrixClient, account: Account, room_id: str) -> None:
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=account)).ok()


async def test_threads_newest_activity_first_in_pages(client: MatrixClient) -> None:
    alice, bob, carol, dave = [await client.register() for _ in range(4)]
    room_id = await create_room(client, alice, preset="public_chat")
    for member in (bob, carol, dave):
        await join(client, member, room_id)
    first, second, third = [await say(client, room_id, alice, f"root {i}") for i in range(3)]
    await say(client, room_id, alice, "no thread here")
    await reply(client, room_id, bob, first, "on the first")
    await reply(client, room_id, bob, second, "on the second")
    await reply(client, room_id, carol, third, "on the third")
    await reply(client, room_id, bob, first, "the first again")

    page = (await threads(client, bob, room_id, limit="2")).ok()
    assert [e["event_id"] for e in page["chunk"]] == [first, third]
    assert page["chunk"][0]["content"]["body"] == "root 0"
    assert page["chunk"][0]["sender"] == alice.user_id
    # Roots come with their thread's summary ("Server-side aggregation").
    summary = page["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
    assert summary["count"] == 2
    assert summary["latest_event"]["content"]["body"] == "the first again"
    assert summary["current_user_participated"] is True
    rest = (await threads(client, bob, room_id, limit="2", **{"from": page["next_batch"]})).ok()
    assert [e["event_id"] for e in rest["chunk"]] == [second]
    assert "next_batch" not in rest
    assert await roots(client, bob, room_id, limit="1") == [first, third, second]
    assert await roots(client, bob, room_id) == [first, third, second]

    # Participation: the root's sender, or a thread event's.
    assert await roots(client, alice, room_id, include="participated") == [first, third, second]
    assert await roots(client, bob, room_id, include="participated", limit="1") == [first, second]
    assert await roots(client, carol, room_id, include="participated") == [third]
    assert await roots(client, dave, room_id, include="participated") == []
    assert await roots(client, dave, room_id, include="all") == [first, third, second]


async def test_threads_follow_history_visibility(client: MatrixClient) -> None:
    alice, bob, outsider = [await client.register() for _ in range(3)]
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "joined"},
            }
        ],
    )
    before_bob = await say(client, room_id, alice, "said before bob joined")
    await join(client, bob, room_id)
    after_bob = await say(client, room_id, alice, "said after bob joined")
    await reply(client, room_id, alice, after_bob, "newer thread")
    # The older thread is the latest active, but its root is hidden from bob.
    await reply(client, room_id, alice, before_bob, "old thread, new answer")

    assert await roots(client, alice, room_id) == [before_bob, after_bob]
    assert await roots(client, bob, room_id) == [after_bob]
    page = (await threads(client, bob, room_id, limit="1")).ok()
    assert [e["event_id"] for e in page["chunk"]] == [after_bob]
    assert "next_batch" not in page

    # Neither a stranger to the room nor anyone for an unknown room may list threads.
    assert_error(await threads(client, outsider, room_id), 403, "M_FORBIDDEN")
    unknown = f"!unknown:{alice.user_id.split(':', 1)[1]}"
    assert_error(await threads(client, alice, unknown), 403, "M_FORBIDDEN")


async def test_purged_replies_leave_their_threads(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    """A retention run purges bob's replies (a legal hold keeps alice's): a thread whose
    latest reply went is ordered by its newest remaining one, a thread left without
    replies is no longer listed."""
    admin = await login_admin(client, homeserver)
    alice, bob = await client.register(), await client.register()
    retention = {"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}}
    room_id = await create_room(client, alice, preset="public_chat", initial_state=[retention])
    await join(client, bob, room_id)
    hold = {"kind": "user", "target": alice.user_id, "case_id": "T-16", "reason": "case"}
    (await client.request("POST", "/_peyvand/admin/v1/legal_holds", json=hold, token=admin)).ok()
    first, second, third = [await say(client, room_id, alice, f"root {i}") for i in range(3)]
    await reply(client, room_id, alice, first, "alice on the first")
    await reply(client, room_id, alice, third, "alice on the third")
    await reply(client, room_id, bob, first, "bob on the first")
    await reply(client, room_id, bob, second, "bob on the second")
    assert await roots(client, alice, room_id) == [second, first, third]

    await asyncio.sleep(0.01)
    run = await client.request(
        "POST",
        "/_peyvand/admin/v1/retention/run",
        json={"room_id": room_id, "now_ts": int(time.time() * 1000) + DAY_MS},
        token=admin,
    )
    run.ok()
    assert await roots(client, alice, room_id) == [third, first]


async def test_redacted_replies_leave_their_threads(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    first, second = [await say(client, room_id, alice, f"root {i}") for i in range(2)]
    await reply(client, room_id, bob, first, "kept")
    only = await reply(client, room_id, bob, second, "to be redacted")
    latest = await reply(client, room_id, bob, first, "also to be redacted")
    assert await roots(client, alice, room_id) == [first, second]
    for event_id in (only, latest):
        path = f"rooms/{quote(room_id)}/redact/{quote(event_id)}/{quote(event_id)}"
        (await client.request("PUT", path, json={}, token=bob)).ok()
    # The first thread is ordered by its remaining reply; the second has none left.
    assert await roots(client, alice, room_id) == [first]
    await reply(client, room_id, bob, second, "back again")
    assert await roots(client, alice, room_id) == [second, first]


async def test_threads_bad_input(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    root = await say(client, room_id, alice, "root")
    await reply(client, room_id, alice, root, "answer")
    for params in (
        {"include": "bogus"},
        {"from": "not-a-token"},
        {"from": "t99999999999999999999999"},
        {"limit": "0"},
        {"limit": "-3"},
        {"limit": "many"},
    ):
        assert_error(await threads(client, alice, room_id, **params), 400, "M_INVALID_PARAM")
    assert_error(await threads(client, alice, "not-a-room"), 400, "M_INVALID_PARAM")
    # A limit above the maximum is lowered to it.
    assert await roots(client, alice, room_id, limit="100000") == [root]
