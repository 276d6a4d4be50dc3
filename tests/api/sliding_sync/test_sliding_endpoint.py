"""The simplified sliding sync endpoint (MSC4186) over HTTP: discovery, the request
body's checks, ``pos`` and long-polling, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from harness.client import MatrixClient
from harness.rooms import say
from harness.sliding_sync import create_room, one_list, request, sliding, window
from harness.sync import LongPoll


async def test_versions_advertise_simplified_sliding_sync(client: MatrixClient) -> None:
    versions = (await client.request("GET", "/_matrix/client/versions")).ok()
    assert versions["unstable_features"]["org.matrix.simplified_msc3575"] is True


async def test_a_first_request_lists_the_rooms_newest_first(client: MatrixClient) -> None:
    alice = await client.register()
    older = await create_room(client, alice, name="Older")
    newer = await create_room(client, alice, name="Newer")
    body = await sliding(client, alice, {"lists": one_list(timeline_limit=2)})
    assert body["pos"]
    assert body["lists"]["all"] == {
        "count": 2,
        "ops": [{"op": "SYNC", "range": [0, 19], "room_ids": [newer, older]}],
    }
    room = body["rooms"][newer]
    assert room["initial"] is True
    assert room["name"] == "Newer"
    assert room["joined_count"] == 1 and room["invited_count"] == 0
    assert len(room["timeline"]) == 2 and room["limited"] is True
    assert room["prev_batch"]
    assert room["num_live"] == 0
    assert room["notification_count"] == 0 and room["highlight_count"] == 0
    assert isinstance(room["bump_stamp"], int)
    assert body["rooms"][older]["bump_stamp"] < room["bump_stamp"]
    assert body["extensions"] == {}


async def test_a_message_moves_its_room_to_the_top(client: MatrixClient) -> None:
    alice = await client.register()
    first = await create_room(client, alice)
    second = await create_room(client, alice)
    body = await sliding(client, alice, {"lists": one_list()})
    assert window(body) == [second, first]
    await say(client, first, alice, "bump")
    after = await sliding(client, alice, {"lists": one_list()}, body["pos"])
    assert window(after) == [first, second]
    # Only the new message, not the room again.
    assert list(after["rooms"]) == [first]
    room = after["rooms"][first]
    assert "initial" not in room
    assert [e["content"].get("body") for e in room["timeline"]] == ["bump"]
    assert room["num_live"] == 1 and room["limited"] is False


async def test_ranges_cut_the_sorted_list(client: MatrixClient) -> None:
    alice = await client.register()
    rooms = [await create_room(client, alice) for _ in range(5)]
    lists = {
        "top": {"ranges": [[0, 1]], "timeline_limit": 0, "required_state": []},
        "rest": {"ranges": [[2, 3], [4, 10]], "timeline_limit": 0, "required_state": []},
    }
    body = await sliding(client, alice, {"lists": lists})
    newest_first = rooms[::-1]
    assert body["lists"]["top"]["ops"][0]["room_ids"] == newest_first[:2]
    assert [op["room_ids"] for op in body["lists"]["rest"]["ops"]] == [
        newest_first[2:4],
        newest_first[4:],
    ]
    assert body["lists"]["rest"]["count"] == 5
    # timeline_limit 0: no timeline.
    assert all("timeline" not in room for room in body["rooms"].values())


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (
            {"lists": {"a": {"ranges": [["0", 1]], "timeline_limit": 1, "required_state": []}}},
            "M_BAD_JSON",
        ),
        (
            {"lists": {"a": {"ranges": [[3, 1]], "timeline_limit": 1, "required_state": []}}},
            "M_INVALID_PARAM",
        ),
        (
            {"lists": {"a": {"ranges": [[-1, 1]], "timeline_limit": 1, "required_state": []}}},
            "M_INVALID_PARAM",
        ),
        (
            {"lists": {"a": {"ranges": [[0, 1]], "timeline_limit": 1001, "required_state": []}}},
            "M_INVALID_PARAM",
        ),
        (
            {"lists": {"a": {"ranges": [[0, 1]], "timeline_limit": "1", "required_state": []}}},
            "M_BAD_JSON",
        ),
        (
            {
                "lists": {
                    "a": {
                        "ranges": [[0, 1]],
                        "timeline_limit": 1,
                        "required_state": ["m.room.name"],
                    }
                }
            },
            "M_BAD_JSON",
        ),
        ({"lists": {"a": {"ranges": [[0, 1]], "timeline_limit": 1}}}, "M_MISSING_PARAM"),
        (
            {"lists": {"a": {"ranges": [[0, 1]] * 101, "timeline_limit": 1, "required_state": []}}},
            "M_INVALID_PARAM",
        ),
        (
            {"lists": {f"l{i}": {"timeline_limit": 1, "required_state": []} for i in range(101)}},
            "M_INVALID_PARAM",
        ),
        ({"lists": {"x" * 65: {"timeline_limit": 1, "required_state": []}}}, "M_INVALID_PARAM"),
        ({"lists": []}, "M_BAD_JSON"),
        (
            {
                "lists": {
                    "a": {"timeline_limit": 1, "required_state": [], "filters": {"is_dm": "yes"}}
                }
            },
            "M_BAD_JSON",
        ),
        (
            {"room_subscriptions": {"!r:x": {"timeline_limit": 1, "required_state": 3}}},
            "M_BAD_JSON",
        ),
        ({"conn_id": 5}, "M_BAD_JSON"),
        ({"conn_id": "c" * 256}, "M_INVALID_PARAM"),
        ({"conn_id": "\u00e9" * 128}, "M_INVALID_PARAM"),
        (
            {
                "room_subscriptions": {
                    "!r:x": {"timeline_limit": 1, "required_state": [["t" * 256, ""]]}
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "room_subscriptions": {
                    "!r:x": {"timeline_limit": 1, "required_state": [["t", "k" * 256]]}
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "room_subscriptions": {
                    "!r:x": {
                        "timeline_limit": 1,
                        "required_state": [["t", str(i)] for i in range(1001)],
                    }
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "room_subscriptions": {
                    f"!r{i}:x": {"timeline_limit": 1, "required_state": []} for i in range(1001)
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {"room_subscriptions": {"!r:x": {"timeline_limit": -1, "required_state": []}}},
            "M_INVALID_PARAM",
        ),
        (
            {
                "room_subscriptions": {
                    "!r:x": {
                        "timeline_limit": 1,
                        "required_state": [],
                        "unread_thread_notifications": "yes",
                    }
                }
            },
            "M_BAD_JSON",
        ),
        *[
            (
                {
                    "lists": {
                        "a": {
                            "timeline_limit": 1,
                            "required_state": [],
                            "filters": {key: [f"v{i}" for i in range(101)]},
                        }
                    }
                },
                "M_INVALID_PARAM",
            )
            for key in ("spaces", "tags", "not_tags", "room_types", "not_room_types")
        ],
    ],
)
async def test_a_bad_body_is_answered_with_its_error(
    client: MatrixClient, body: dict[str, Any], errcode: str
) -> None:
    alice = await client.register()
    response = await request(client, alice, body)
    assert response.status == 400, response.body
    assert response.body["errcode"] == errcode


@pytest.mark.parametrize("pos", ["nonsense", "99999999/s1_0_0_0_0_0_0_0", "1/x"])
async def test_an_unknown_pos_is_m_unknown_pos(client: MatrixClient, pos: str) -> None:
    alice = await client.register()
    response = await request(client, alice, {"lists": one_list()}, pos)
    assert response.status == 400
    assert response.body["errcode"] == "M_UNKNOWN_POS"


async def test_a_pos_belongs_to_its_connection(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    main = {"conn_id": "main", "lists": one_list()}
    body = await sliding(client, alice, main)
    other = await request(client, alice, {"conn_id": "other", "lists": one_list()}, body["pos"])
    assert other.body["errcode"] == "M_UNKNOWN_POS"
    await say(client, room_id, alice, "once")
    lost = await sliding(client, alice, main, body["pos"])
    # A retry from the same pos (its response was lost) is answered the same.
    retried = await sliding(client, alice, main, body["pos"])
    assert retried["rooms"].keys() == lost["rooms"].keys()
    assert [e["content"]["body"] for e in retried["rooms"][room_id]["timeline"]] == ["once"]
    # The connection moved on from the retried answer: the lost one's pos is gone.
    assert (await request(client, alice, main, lost["pos"])).body["errcode"] == "M_UNKNOWN_POS"


async def test_an_idle_request_waits_and_wakes_on_a_message(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    body = await sliding(client, alice, {"lists": one_list()})
    idle = await sliding(client, alice, {"lists": one_list()}, body["pos"], timeout_ms=300)
    assert idle["rooms"] == {}
    poll = await LongPoll.start(
        sliding(client, alice, {"lists": one_list()}, idle["pos"], timeout_ms=10_000), 10
    )
    poll.assert_waiting()
    await say(client, room_id, alice, "wake")
    woken = await poll.woken()
    assert [e["content"]["body"] for e in woken["rooms"][room_id]["timeline"]] == ["wake"]


async def test_a_message_in_a_room_out_of_view_ends_the_wait_only_by_moving_the_list(
    client: MatrixClient,
) -> None:
    alice = await client.register()
    out_of_view = await create_room(client, alice)
    in_view = await create_room(client, alice)
    lists = {"top": {"ranges": [[0, 0]], "timeline_limit": 1, "required_state": []}}
    body = await sliding(client, alice, {"lists": lists})
    assert window(body, "top") == [in_view]
    poll = await LongPoll.start(
        sliding(client, alice, {"lists": lists}, body["pos"], timeout_ms=10_000), 10
    )
    poll.assert_waiting()
    await say(client, out_of_view, alice, "up")
    woken = await poll.woken()
    assert window(woken, "top") == [out_of_view]
    assert woken["rooms"][out_of_view]["initial"] is True
