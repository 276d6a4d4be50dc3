"""Bad input over HTTP: every malformed, mistyped, oversized, unauthenticated or
rate-limited request gets the spec's error (Client-Server API "Standard error response",
"Size limits", "Rate limiting", "Canonical JSON"), never a 500, and a rejected send leaves
no trace in the room."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from harness.client import CLIENT_V3, Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess

ConfiguredHomeserver = Callable[..., HomeserverProcess]

MAX_EVENT_BYTES = 65_536
MAX_SAFE_INT = 2**53 - 1
_txn = itertools.count()


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert isinstance(response.body, dict), response.body
    assert response.body["errcode"] == errcode, response.body
    assert isinstance(response.body.get("error", ""), str)


@dataclass(frozen=True, slots=True)
class Room:
    room_id: str
    owner: Account


async def raw_request(
    homeserver: HomeserverProcess,
    method: str,
    path: str,
    data: bytes,
    token: Account | None = None,
) -> Response:
    """A request with a body sent as raw bytes (not serialised by the client)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.access_token}"
    async with (
        new_session() as session,
        session.request(
            method, f"{homeserver.base_url}{CLIENT_V3}/{path}", data=data, headers=headers
        ) as response,
    ):
        text = await response.text()
        try:
            body: Any = await response.json(content_type=None)
        except ValueError:
            body = text
        return Response(response.status, body)


async def send(
    client: MatrixClient, room: Room, content: Any, event_type: str = "m.room.message"
) -> Response:
    path = f"rooms/{room.room_id}/send/{event_type}/t{next(_txn)}"
    return await client.request("PUT", path, json=content, token=room.owner)


async def timeline_ids(client: MatrixClient, room: Room) -> list[str]:
    response = await client.request(
        "GET", f"rooms/{room.room_id}/messages", token=room.owner, params={"limit": "1000"}
    )
    return [event["event_id"] for event in response.ok()["chunk"]]


@pytest.fixture(scope="module")
async def room(homeserver: HomeserverProcess) -> AsyncIterator[Room]:
    """One user and room for the module: every test compares the room before and after."""
    async with new_session() as session:
        client = MatrixClient(session, homeserver.base_url)
        owner = await client.register()
        created = await client.request("POST", "createRoom", json={}, token=owner)
        yield Room(created.ok()["room_id"], owner)


@pytest.fixture(autouse=True)
def _no_unhandled_errors(homeserver: HomeserverProcess) -> Any:
    """Whatever a test sends, the server never logs an unhandled error (a 500)."""
    before = homeserver.log().count("Unhandled error")
    yield
    after = homeserver.log()
    assert after.count("Unhandled error") == before, after[-5000:]


# Body parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"{", b"not json", b'{"a": NaN}', b'{"a": 1e400}', b"\xff\xfe", b"[1, 2]", b'"x"']
)
async def test_malformed_json_is_not_json(
    homeserver: HomeserverProcess, client: MatrixClient, room: Room, data: bytes
) -> None:
    before = await timeline_ids(client, room)
    path = f"rooms/{room.room_id}/send/m.room.message/t{next(_txn)}"
    assert_error(await raw_request(homeserver, "PUT", path, data, room.owner), 400, "M_NOT_JSON")
    created = await raw_request(homeserver, "POST", "createRoom", data, room.owner)
    assert_error(created, 400, "M_NOT_JSON")
    assert await timeline_ids(client, room) == before


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"visibility": 5}, "M_BAD_JSON"),
        ({"visibility": "secret"}, "M_INVALID_PARAM"),
        ({"preset": "nope"}, "M_INVALID_PARAM"),
        ({"preset": 1}, "M_BAD_JSON"),
        ({"invite": "@a:localhost"}, "M_BAD_JSON"),
        ({"invite": [1]}, "M_BAD_JSON"),
        ({"invite": ["not a user id"]}, "M_INVALID_PARAM"),
        ({"name": ["x"]}, "M_BAD_JSON"),
        ({"is_direct": "yes"}, "M_BAD_JSON"),
        ({"creation_content": []}, "M_BAD_JSON"),
        ({"initial_state": {}}, "M_BAD_JSON"),
        ({"initial_state": [1]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.topic"}]}, "M_MISSING_PARAM"),
        ({"power_level_content_override": "x"}, "M_BAD_JSON"),
        ({"room_version": 11}, "M_BAD_JSON"),
    ],
)
async def test_create_room_wrong_types_and_values(
    client: MatrixClient, room: Room, body: dict[str, Any], errcode: str
) -> None:
    before = (await client.request("GET", "joined_rooms", token=room.owner)).ok()
    response = await client.request("POST", "createRoom", json=body, token=room.owner)
    assert_error(response, 400, errcode)
    after = (await client.request("GET", "joined_rooms", token=room.owner)).ok()
    assert after == before, "a rejected createRoom must not create a room"


async def test_wrong_types_in_membership_bodies(client: MatrixClient, room: Room) -> None:
    invite = f"rooms/{room.room_id}/invite"
    assert_error(
        await client.request("POST", invite, json={}, token=room.owner), 400, "M_MISSING_PARAM"
    )
    response = await client.request("POST", invite, json={"user_id": 5}, token=room.owner)
    assert_error(response, 400, "M_BAD_JSON")
    response = await client.request(
        "POST",
        f"rooms/{room.room_id}/kick",
        json={"user_id": "@x:localhost", "reason": 3},
        token=room.owner,
    )
    assert_error(response, 400, "M_BAD_JSON")


# Routing and authentication -----------------------------------------------------------


async def test_unknown_endpoint_is_unrecognized(client: MatrixClient, room: Room) -> None:
    for path in ("no/such/endpoint", f"/_matrix/client/v3/rooms/{room.room_id}/frobnicate"):
        assert_error(await client.request("GET", path, token=room.owner), 404, "M_UNRECOGNIZED")
    assert_error(await client.request("GET", "/_matrix/nothing"), 404, "M_UNRECOGNIZED")


async def test_wrong_method_is_unrecognized(client: MatrixClient, room: Room) -> None:
    response = await client.request("DELETE", "createRoom", token=room.owner)
    assert_error(response, 405, "M_UNRECOGNIZED")
    response = await client.request(
        "POST", f"rooms/{room.room_id}/send/m.room.message/t1", json={}, token=room.owner
    )
    assert_error(response, 405, "M_UNRECOGNIZED")


async def test_missing_token(client: MatrixClient, room: Room) -> None:
    for method, path in (
        ("POST", "createRoom"),
        ("GET", "sync"),
        ("PUT", f"rooms/{room.room_id}/send/m.room.message/t{next(_txn)}"),
        ("GET", f"rooms/{room.room_id}/messages"),
    ):
        response = await client.request(method, path, json={} if method != "GET" else None)
        assert_error(response, 401, "M_MISSING_TOKEN")


async def test_bad_token(client: MatrixClient, room: Room) -> None:
    before = await timeline_ids(client, room)
    for token in ("nonsense", room.owner.access_token + "x"):
        response = await client.request(
            "PUT",
            f"rooms/{room.room_id}/send/m.room.message/t{next(_txn)}",
            json={"msgtype": "m.text", "body": "x"},
            token=token,
        )
        assert_error(response, 401, "M_UNKNOWN_TOKEN")
    response = await client.request("GET", "sync", params={"access_token": "nonsense"})
    assert_error(response, 401, "M_UNKNOWN_TOKEN")
    assert await timeline_ids(client, room) == before


# Event content ------------------------------------------------------------------------


async def test_event_over_64k_is_too_large(client: MatrixClient, room: Room) -> None:
    before = await timeline_ids(client, room)
    big = {"msgtype": "m.text", "body": "x" * MAX_EVENT_BYTES}
    assert_error(await send(client, room, big), 413, "M_TOO_LARGE")
    state = await client.request(
        "PUT",
        f"rooms/{room.room_id}/state/m.room.topic",
        json={"topic": "x" * MAX_EVENT_BYTES},
        token=room.owner,
    )
    assert_error(state, 413, "M_TOO_LARGE")
    assert await timeline_ids(client, room) == before
    # Just under the limit is accepted: the limit is on the event, not an arbitrary cut.
    fits = {"msgtype": "m.text", "body": "x" * (MAX_EVENT_BYTES - 2000)}
    event_id = (await send(client, room, fits)).ok()["event_id"]
    assert (await timeline_ids(client, room))[0] == event_id


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.text", "body": "x", "score": 1.5},
        {"msgtype": "m.text", "body": "x", "nested": {"list": [1, 2.25]}},
        {"msgtype": "m.text", "body": "x", "big": 1.0e300},
    ],
)
async def test_floats_in_content_are_bad_json(
    client: MatrixClient, room: Room, content: dict[str, Any]
) -> None:
    before = await timeline_ids(client, room)
    assert_error(await send(client, room, content), 400, "M_BAD_JSON")
    assert await timeline_ids(client, room) == before


@pytest.mark.parametrize(
    "number", [MAX_SAFE_INT + 1, -MAX_SAFE_INT - 1, 2**63, -(2**63), 2**64, 10**30]
)
async def test_integers_outside_canonical_range_are_bad_json(
    homeserver: HomeserverProcess, client: MatrixClient, room: Room, number: int
) -> None:
    before = await timeline_ids(client, room)
    body = b'{"msgtype": "m.text", "body": "x", "n": %d}' % number
    path = f"rooms/{room.room_id}/send/m.room.message/t{next(_txn)}"
    assert_error(await raw_request(homeserver, "PUT", path, body, room.owner), 400, "M_BAD_JSON")
    assert await timeline_ids(client, room) == before


async def test_integers_at_the_canonical_bounds_are_accepted(
    client: MatrixClient, room: Room
) -> None:
    content = {"msgtype": "m.text", "body": "x", "max": MAX_SAFE_INT, "min": -MAX_SAFE_INT}
    event_id = (await send(client, room, content)).ok()["event_id"]
    event = (
        await client.request("GET", f"rooms/{room.room_id}/event/{event_id}", token=room.owner)
    ).ok()
    assert event["content"]["max"] == MAX_SAFE_INT and event["content"]["min"] == -MAX_SAFE_INT


async def test_non_object_content_is_rejected(client: MatrixClient, room: Room) -> None:
    before = await timeline_ids(client, room)
    for content in ([1, 2], "text", 5):
        response = await send(client, room, content)
        assert response.status == 400 and response.body["errcode"] in ("M_NOT_JSON", "M_BAD_JSON")
    assert await timeline_ids(client, room) == before


# Rate limits --------------------------------------------------------------------------


async def test_rate_limited_burst(configured_homeserver: ConfiguredHomeserver) -> None:
    server = configured_homeserver(open_registration=True, login_burst=4)
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        owner = await client.register()  # two login-class requests (UIA)
        room_id = (await client.request("POST", "createRoom", json={}, token=owner)).ok()["room_id"]
        room = Room(room_id, owner)

        # Login attempts beyond the burst are limited, with a retry hint.
        logins = [await client.login(owner.user_id) for _ in range(2)]
        assert len(logins) == 2
        limited = await client.request(
            "POST",
            "login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": owner.user_id},
                "password": owner.password,
            },
        )
        assert_error(limited, 429, "M_LIMIT_EXCEEDED")
        assert (
            isinstance(limited.body["retry_after_ms"], int) and limited.body["retry_after_ms"] > 0
        )

        # A burst of sends past the per-user limit: some are refused, and a refused send
        # leaves no trace (every event in the room is one that was answered 200).
        contents = [{"msgtype": "m.text", "body": f"burst {i}"} for i in range(120)]
        responses = await asyncio.gather(*(send(client, room, c) for c in contents))
        accepted = {r.body["event_id"] for r in responses if r.status == 200}
        refused = [r for r in responses if r.status != 200]
        assert refused, "a burst of 120 sends must exceed the default limit"
        for response in refused:
            assert_error(response, 429, "M_LIMIT_EXCEEDED")
            assert response.body["retry_after_ms"] > 0
        await asyncio.sleep(1.0)  # let the bucket refill enough to read
        messages = await client.request(
            "GET",
            f"rooms/{room_id}/messages",
            token=owner,
            params={"limit": "1000", "filter": '{"types": ["m.room.message"]}'},
        )
        in_room = {e["event_id"] for e in messages.ok()["chunk"]}
        assert in_room == accepted
    assert "Unhandled error" not in server.log()


# Room and event identifiers -----------------------------------------------------------


@pytest.mark.parametrize("room_id", ["nonsense", "%23alias:localhost", "@user:localhost", "$event"])
async def test_invalid_room_ids(client: MatrixClient, room: Room, room_id: str) -> None:
    """A room ID that is not one (no ``!`` sigil) is 400 M_INVALID_PARAM on every route
    taking ``{roomId}``."""
    for method, path, body in (
        ("PUT", f"rooms/{room_id}/send/m.room.message/t{next(_txn)}", {"body": "x"}),
        ("PUT", f"rooms/{room_id}/state/m.room.topic", {"topic": "x"}),
        ("GET", f"rooms/{room_id}/messages", None),
        ("GET", f"rooms/{room_id}/state", None),
        ("GET", f"rooms/{room_id}/members", None),
        ("POST", f"rooms/{room_id}/join", {}),
        ("POST", f"rooms/{room_id}/leave", {}),
    ):
        response = await client.request(method, path, json=body, token=room.owner)
        assert_error(response, 400, "M_INVALID_PARAM")


async def test_unknown_rooms(client: MatrixClient, room: Room) -> None:
    """Client-Server API: reading a room one is not in is 403 M_FORBIDDEN (404 for a single
    event); writing to a room that does not exist is 403 or 404, never a new room."""
    unknown = "!doesnotexist:localhost"
    user = room.owner
    for path in ("messages", "state", "state/m.room.create", "members", "joined_members"):
        response = await client.request("GET", f"rooms/{unknown}/{path}", token=user)
        assert_error(response, 403, "M_FORBIDDEN")
    event = await client.request("GET", f"rooms/{unknown}/event/$nothing", token=user)
    assert_error(event, 404, "M_NOT_FOUND")
    for method, path, body in (
        ("PUT", f"rooms/{unknown}/send/m.room.message/t{next(_txn)}", {"body": "x"}),
        ("PUT", f"rooms/{unknown}/state/m.room.topic", {"topic": "x"}),
        ("POST", f"rooms/{unknown}/invite", {"user_id": "@x:localhost"}),
        ("POST", f"rooms/{unknown}/leave", {}),
        ("POST", f"rooms/{unknown}/join", {}),
        ("POST", f"join/{unknown}", {}),
    ):
        response = await client.request(method, path, json=body, token=user)
        assert response.status in (403, 404), (method, path, response)
        assert response.body["errcode"] in ("M_FORBIDDEN", "M_NOT_FOUND"), (path, response)
    joined = (await client.request("GET", "joined_rooms", token=user)).ok()["joined_rooms"]
    assert unknown not in joined and room.room_id in joined


async def test_unknown_event_ids(client: MatrixClient, room: Room) -> None:
    for event_id in ("$doesnotexist", "$doesnotexist:localhost", "nonsense"):
        for path in (
            f"rooms/{room.room_id}/event/{event_id}",
            f"rooms/{room.room_id}/context/{event_id}",
        ):
            response = await client.request("GET", path, token=room.owner)
            assert_error(response, 404, "M_NOT_FOUND")
        redact = await client.request(
            "PUT",
            f"rooms/{room.room_id}/redact/{event_id}/t{next(_txn)}",
            json={},
            token=room.owner,
        )
        assert_error(redact, 404, "M_NOT_FOUND")


async def test_event_of_another_room_is_not_found(client: MatrixClient, room: Room) -> None:
    other = (await client.request("POST", "createRoom", json={}, token=room.owner)).ok()["room_id"]
    event_id = (
        await send(client, Room(other, room.owner), {"msgtype": "m.text", "body": "x"})
    ).ok()["event_id"]
    response = await client.request(
        "GET", f"rooms/{room.room_id}/event/{event_id}", token=room.owner
    )
    assert_error(response, 404, "M_NOT_FOUND")


# Pagination, limits, sync and filters -------------------------------------------------


@pytest.mark.parametrize(
    "token", ["garbage", "s99999999999999999999", "t-1_2", "", "%00", "123abc"]
)
async def test_bad_pagination_tokens(client: MatrixClient, room: Room, token: str) -> None:
    for key in ("from", "to"):
        response = await client.request(
            "GET", f"rooms/{room.room_id}/messages", token=room.owner, params={key: token}
        )
        if token == "":
            response.ok()  # an empty parameter is the same as none
            continue
        assert_error(response, 400, "M_INVALID_PARAM")


async def test_bad_direction(client: MatrixClient, room: Room) -> None:
    response = await client.request(
        "GET", f"rooms/{room.room_id}/messages", token=room.owner, params={"dir": "up"}
    )
    assert_error(response, 400, "M_INVALID_PARAM")


@pytest.mark.parametrize("limit", ["-1", "abc", "1.5", "0x10"])
async def test_bad_limits(client: MatrixClient, room: Room, limit: str) -> None:
    event_id = (await timeline_ids(client, room))[0]
    for path in (f"rooms/{room.room_id}/messages", f"rooms/{room.room_id}/context/{event_id}"):
        response = await client.request("GET", path, token=room.owner, params={"limit": limit})
        assert_error(response, 400, "M_INVALID_PARAM")


async def test_huge_limits_are_capped(client: MatrixClient, room: Room) -> None:
    for _ in range(3):
        (await send(client, room, {"msgtype": "m.text", "body": "x"})).ok()
    response = await client.request(
        "GET", f"rooms/{room.room_id}/messages", token=room.owner, params={"limit": "1000000000"}
    )
    chunk = response.ok()["chunk"]
    assert 3 <= len(chunk) <= 1000
    sync = await client.request(
        "GET",
        "sync",
        token=room.owner,
        params={"filter": '{"room": {"timeline": {"limit": 1000000000}}}'},
    )
    assert room.room_id in sync.ok()["rooms"]["join"]
    event_id = chunk[0]["event_id"]
    context = await client.request(
        "GET",
        f"rooms/{room.room_id}/context/{event_id}",
        token=room.owner,
        params={"limit": "1000000000"},
    )
    assert context.ok()["event"]["event_id"] == event_id


@pytest.mark.parametrize("since", ["garbage", "s-1", "99999999999999999999999999", "$$$"])
async def test_sync_with_garbage_since(client: MatrixClient, room: Room, since: str) -> None:
    response = await client.request(
        "GET", "sync", token=room.owner, params={"since": since, "timeout": "0"}
    )
    assert response.status == 400, response
    assert response.body["errcode"] in ("M_INVALID_PARAM", "M_BAD_JSON", "M_UNKNOWN")


@pytest.mark.parametrize("raw_timeout", ["-5", "abc", "1e9", "1.5"])
async def test_sync_with_bad_timeout(client: MatrixClient, room: Room, raw_timeout: str) -> None:
    since = (await client.request("GET", "sync", token=room.owner)).ok()["next_batch"]
    response = await client.request(
        "GET", "sync", token=room.owner, params={"since": since, "timeout": raw_timeout}
    )
    assert_error(response, 400, "M_INVALID_PARAM")


@pytest.mark.parametrize("limit", [0, 1, 10**15])
async def test_sync_timeline_limits_within_range(
    client: MatrixClient, room: Room, limit: int
) -> None:
    """Every timeline limit the spec allows works, inline or uploaded: 0 asks for no
    events (the room still shows, limited, with a prev_batch to page back from)."""
    await send(client, room, {"msgtype": "m.text", "body": "x"})
    raw_filter = json.dumps({"room": {"timeline": {"limit": limit}}})
    uploaded = await client.request(
        "POST", f"user/{room.owner.user_id}/filter", json=json.loads(raw_filter), token=room.owner
    )
    for sync_filter in (raw_filter, uploaded.ok()["filter_id"]):
        sync = await client.request(
            "GET", "sync", token=room.owner, params={"filter": sync_filter, "timeout": "0"}
        )
        timeline = sync.ok()["rooms"]["join"][room.room_id]["timeline"]
        if limit == 0:
            assert timeline["events"] == [] and timeline["limited"] is True
            page = await client.request(
                "GET",
                f"rooms/{room.room_id}/messages",
                token=room.owner,
                params={"from": timeline["prev_batch"], "dir": "b", "limit": "1"},
            )
            assert page.ok()["chunk"][0]["content"]["body"] == "x"
        else:
            assert timeline["events"][-1]["content"]["body"] == "x"


@pytest.mark.parametrize(
    "raw_filter",
    [
        "{not json",
        '{"room": {"timeline": {"limit": "ten"}}}',
        '{"room": []}',
        '{"event_fields": "content"}',
        '{"room": {"rooms": "!a:b"}}',
        '{"presence": {"types": [1]}}',
    ],
)
async def test_bad_sync_filters(client: MatrixClient, room: Room, raw_filter: str) -> None:
    sync = await client.request(
        "GET", "sync", token=room.owner, params={"filter": raw_filter, "timeout": "0"}
    )
    assert sync.status == 400, sync
    assert sync.body["errcode"] in ("M_NOT_JSON", "M_BAD_JSON", "M_INVALID_PARAM"), sync
    if raw_filter.startswith("{") and raw_filter.endswith("}"):
        uploaded = await client.request(
            "POST",
            f"user/{room.owner.user_id}/filter",
            json=json.loads(raw_filter),
            token=room.owner,
        )
        assert uploaded.status == 400, uploaded
        assert uploaded.body["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")


async def test_unknown_sync_filter_id(client: MatrixClient, room: Room) -> None:
    sync = await client.request(
        "GET", "sync", token=room.owner, params={"filter": "12345678", "timeout": "0"}
    )
    assert sync.status == 400, sync
    assert sync.body["errcode"] == "M_INVALID_PARAM"


@pytest.mark.parametrize(
    "raw_filter",
    [
        "{not json",
        "[1]",
        '{"limit": "ten"}',
        '{"types": "m.room.message"}',
        '{"not_senders": [1]}',
        '{"contains_url": "yes"}',
    ],
)
async def test_bad_room_event_filters(client: MatrixClient, room: Room, raw_filter: str) -> None:
    for path in (
        f"rooms/{room.room_id}/messages",
        f"rooms/{room.room_id}/context/{(await timeline_ids(client, room))[0]}",
    ):
        response = await client.request(
            "GET", path, token=room.owner, params={"filter": raw_filter}
        )
        assert response.status == 400, (path, response)
        assert response.body["errcode"] in ("M_NOT_JSON", "M_BAD_JSON", "M_INVALID_PARAM")


async def test_state_event_with_bad_values(client: MatrixClient, room: Room) -> None:
    before = await timeline_ids(client, room)
    for event_type, content in (
        ("m.room.power_levels", {"users": {"@a:localhost": "100"}}),
        ("m.room.power_levels", {"ban": "fifty"}),
    ):
        response = await client.request(
            "PUT", f"rooms/{room.room_id}/state/{event_type}", json=content, token=room.owner
        )
        assert response.status in (400, 403), (event_type, content, response)
        assert response.body["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_FORBIDDEN")
    assert await timeline_ids(client, room) == before
