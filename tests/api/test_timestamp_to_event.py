"""Jump to date on one server, over HTTP on every backend (Client-Server API, GET
/_matrix/client/v1/rooms/{roomId}/timestamp_to_event): the closest event either way,
inclusive, only events the user may see, and the spec's errors for bad input."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response
from harness.rooms import create_room, say


async def jump(
    client: MatrixClient, account: Account, room_id: str, ts: object, direction: object
) -> Response:
    params = {k: str(v) for k, v in (("ts", ts), ("dir", direction)) if v is not None}
    return await client.request(
        "GET",
        f"/_matrix/client/v1/rooms/{quote(room_id)}/timestamp_to_event",
        token=account,
        params=params,
    )


async def timestamp_of(client: MatrixClient, account: Account, room_id: str, event_id: str) -> int:
    event = await client.request("GET", f"rooms/{quote(room_id)}/event/{event_id}", token=account)
    ts: int = event.ok()["origin_server_ts"]
    return ts


async def spaced_messages(
    client: MatrixClient, account: Account, room_id: str, count: int
) -> list[tuple[str, int]]:
    """``count`` messages at least 5 ms apart: their IDs and timestamps."""
    sent = []
    for i in range(count):
        await asyncio.sleep(0.005)
        event_id = await say(client, room_id, account, f"message {i}")
        sent.append((event_id, await timestamp_of(client, account, room_id, event_id)))
    return sent


async def test_closest_event_either_way(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    (first, t1), (second, t2), (third, t3) = await spaced_messages(client, alice, room_id, 3)
    assert t1 < t2 < t3

    def answer(response: Response) -> tuple[str, int]:
        body = response.ok()
        return body["event_id"], body["origin_server_ts"]

    # Inclusive of the timestamp itself, either way.
    assert answer(await jump(client, alice, room_id, t2, "f")) == (second, t2)
    assert answer(await jump(client, alice, room_id, t2, "b")) == (second, t2)
    # Between two events: the next one forwards, the previous one backwards.
    assert answer(await jump(client, alice, room_id, t2 + 1, "f")) == (third, t3)
    assert answer(await jump(client, alice, room_id, t2 + 1, "b")) == (second, t2)
    assert answer(await jump(client, alice, room_id, t1 - 1, "f")) == (first, t1)
    # Nothing after the newest event; before the room, nothing either.
    late = await jump(client, alice, room_id, t3 + 60_000, "f")
    assert late.status == 404 and late.body["errcode"] == "M_NOT_FOUND"
    early = await jump(client, alice, room_id, 1, "b")
    assert early.status == 404 and early.body["errcode"] == "M_NOT_FOUND"
    assert first != second


async def test_only_events_the_user_may_see(client: MatrixClient) -> None:
    alice, bob, mallory = [await client.register() for _ in range(3)]
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
    [(before, t_before)] = await spaced_messages(client, alice, room_id, 1)
    await asyncio.sleep(0.005)
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=bob)).ok()
    [(after, t_after)] = await spaced_messages(client, alice, room_id, 1)

    # Alice sees her message before Bob joined; Bob does not.
    seen = await jump(client, alice, room_id, t_before, "b")
    assert seen.ok()["event_id"] == before
    # Backwards Bob gets an older event he may see (the room's set-up, whose visibility
    # was still the default "shared"), never the message.
    hidden = (await jump(client, bob, room_id, t_before, "b")).ok()
    assert hidden["event_id"] != before and hidden["origin_server_ts"] < t_before
    # Forwards from before his join, Bob gets the first event he may see (his join at
    # the earliest), never Alice's earlier message.
    found = (await jump(client, bob, room_id, t_before, "f")).ok()
    assert found["event_id"] != before and found["origin_server_ts"] <= t_after
    # Not in the room at all: refused.
    refused = await jump(client, mallory, room_id, t_after, "b")
    assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN"
    assert after != before


async def test_world_readable_rooms_answer_non_members(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(
        client,
        alice,
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "world_readable"},
            }
        ],
    )
    [(message, ts)] = await spaced_messages(client, alice, room_id, 1)
    assert (await jump(client, bob, room_id, ts, "b")).ok()["event_id"] == message


async def test_bad_input_gets_the_spec_errors(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    cases = [
        (None, "f", 400, "M_MISSING_PARAM"),
        (1000, None, 400, "M_MISSING_PARAM"),
        ("soon", "f", 400, "M_INVALID_PARAM"),
        (2**63, "f", 400, "M_INVALID_PARAM"),
        (1000, "sideways", 400, "M_INVALID_PARAM"),
    ]
    for ts, direction, status, errcode in cases:
        response = await jump(client, alice, room_id, ts, direction)
        assert (response.status, response.body["errcode"]) == (status, errcode), (ts, direction)
    unknown = await jump(client, alice, "!nowhere:example.org", 1000, "f")
    assert unknown.status == 403 and unknown.body["errcode"] == "M_FORBIDDEN"
    not_a_room = await jump(client, alice, "nowhere", 1000, "f")
    assert not_a_room.status == 400 and not_a_room.body["errcode"] == "M_INVALID_PARAM"
    anonymous = await client.request(
        "GET",
        f"/_matrix/client/v1/rooms/{quote(room_id)}/timestamp_to_event",
        params={"ts": "1", "dir": "f"},
    )
    assert anonymous.status == 401 and anonymous.body["errcode"] == "M_MISSING_TOKEN"
