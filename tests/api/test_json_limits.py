"""Limits every request meets where it is parsed (issue 12, items 2-6): JSON nested too
deep, U+0000 in any string, key or parameter, integers beyond a column's range, search
terms beyond any match. Each is a 400 with nothing stored, never a 500, and never
something one user can send that breaks another user's requests."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from harness.client import CLIENT_V3, Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess

MAX_DEPTH = 128
_txn = itertools.count()


def nested(depth: int, leaf: Any = "x") -> Any:
    """A JSON value of exactly ``depth`` nested objects."""
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def nested_bytes(depth: int) -> bytes:
    """``nested(depth)`` as JSON text (client encoders refuse to write past ~250 levels)."""
    return b'{"k":' * depth + b'"x"' + b"}" * depth


def with_deep(template: Any, depth: int) -> bytes:
    """``template`` as JSON with its string ``"DEEP"`` replaced by ``nested(depth)``."""
    return json.dumps(template).encode().replace(b'"DEEP"', nested_bytes(depth))


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def raw(
    homeserver: HomeserverProcess,
    method: str,
    path: str,
    account: Account | None,
    body: bytes = b"{}",
) -> Response:
    """``path`` (absolute, or under the client v3 prefix) sent exactly as given, with
    percent-escapes such as ``%00`` kept."""
    headers = {"Content-Type": "application/json"}
    if account is not None:
        headers["Authorization"] = f"Bearer {account.access_token}"
    full = path if path.startswith("/") else f"{CLIENT_V3}/{path}"
    url = URL(f"{homeserver.base_url}{full}", encoded=True)
    async with (
        new_session() as session,
        session.request(method, url, data=body, headers=headers) as response,
    ):
        try:
            parsed: Any = await response.json(content_type=None)
        except ValueError:
            parsed = await response.text()
        return Response(response.status, parsed)


@pytest.fixture(autouse=True)
def _no_unhandled_errors(homeserver: HomeserverProcess) -> Any:
    before = homeserver.log().count("Unhandled error")
    yield
    after = homeserver.log()
    assert after.count("Unhandled error") == before, after[-5000:]


@pytest.fixture
async def pair(client: MatrixClient) -> AsyncIterator[tuple[Account, Account, str]]:
    """An attacker and a victim in one room of the attacker's."""
    attacker, victim = await client.register(), await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=attacker)).ok()["room_id"]
    await client.request("POST", f"rooms/{room_id}/invite", {"user_id": victim.user_id}, attacker)
    (await client.request("POST", f"rooms/{room_id}/join", {}, victim)).ok()
    yield attacker, victim, room_id


async def sync(client: MatrixClient, account: Account, since: str | None = None) -> Any:
    params = {"timeout": "0"} | ({"since": since} if since else {})
    return (await client.request("GET", "sync", token=account, params=params)).ok()


# Item 2: one user can no longer break another user's sync ------------------------------


async def test_deep_to_device_is_refused_and_the_victims_sync_survives(
    client: MatrixClient, pair: tuple[Account, Account, str]
) -> None:
    attacker, victim, _ = pair
    before = await sync(client, victim)
    messages = {"messages": {victim.user_id: {victim.device_id: nested(250)}}}
    answer = await client.request("PUT", f"sendToDevice/m.test/t{next(_txn)}", messages, attacker)
    assert_error(answer, 400, "M_BAD_JSON")
    after = await sync(client, victim, before["next_batch"])
    assert after.get("to_device", {}).get("events", []) == []


async def test_to_device_at_the_limit_is_delivered(
    client: MatrixClient, pair: tuple[Account, Account, str]
) -> None:
    attacker, victim, _ = pair
    before = await sync(client, victim)
    content = nested(MAX_DEPTH - 3)  # messages.<user>.<device>.<content>
    messages = {"messages": {victim.user_id: {victim.device_id: content}}}
    path = f"sendToDevice/m.test/t{next(_txn)}"
    (await client.request("PUT", path, messages, attacker)).ok()
    after = await sync(client, victim, before["next_batch"])
    assert [e["content"] for e in after["to_device"]["events"]] == [content]


async def test_deep_account_data_is_refused_and_sync_survives(client: MatrixClient) -> None:
    user = await client.register()
    path = f"user/{quote(user.user_id)}/account_data/m.test.deep"
    for depth in (MAX_DEPTH + 1, 250, 254, 300):
        assert_error(await client.request("PUT", path, nested(depth), user), 400, "M_BAD_JSON")
    assert (await client.request("GET", path, token=user)).status == 404
    content = nested(MAX_DEPTH)
    (await client.request("PUT", path, content, user)).ok()
    events = (await sync(client, user))["account_data"]["events"]
    assert {"type": "m.test.deep", "content": content} in events


async def test_deep_room_account_data_and_tags(
    client: MatrixClient, pair: tuple[Account, Account, str]
) -> None:
    _, victim, room_id = pair
    user_path = f"user/{quote(victim.user_id)}/rooms/{room_id}"
    answer = await client.request("PUT", f"{user_path}/account_data/m.x", nested(250), victim)
    assert_error(answer, 400, "M_BAD_JSON")
    answer = await client.request("PUT", f"{user_path}/tags/u.t", nested(250), victim)
    assert_error(answer, 400, "M_BAD_JSON")
    assert (await client.request("GET", "sync", token=victim)).status == 200


# Item 3: deep bodies anywhere are a 400, not a 500 -------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 254, 500, 1000])
async def test_deep_bodies_everywhere_are_bad_json(
    homeserver: HomeserverProcess,
    client: MatrixClient,
    pair: tuple[Account, Account, str],
    depth: int,
) -> None:
    attacker, _, room_id = pair
    deep = "DEEP"
    me = quote(attacker.user_id)
    requests: list[tuple[str, str, Any]] = [
        ("PUT", f"rooms/{room_id}/send/m.room.message/t{next(_txn)}", {"body": deep}),
        ("PUT", f"rooms/{room_id}/state/m.test/key", {"v": deep}),
        ("POST", "createRoom", {"creation_content": {"v": deep}}),
        (
            "POST",
            "createRoom",
            {"initial_state": [{"type": "m.x", "state_key": "", "content": {"v": deep}}]},
        ),
        ("PUT", f"user/{me}/account_data/m.test", {"v": deep}),
        ("POST", f"user/{me}/filter", {"room": deep}),
        ("PUT", "pushrules/global/override/r1", {"actions": [deep]}),
        ("PUT", f"profile/{me}/displayname", {"displayname": deep}),
        ("POST", "keys/upload", {"device_keys": deep}),
        ("POST", "room_keys/version", {"algorithm": "m.megolm_backup.v1", "auth_data": deep}),
        ("PUT", f"sendToDevice/m.test/t{next(_txn)}", {"messages": deep}),
        ("POST", f"rooms/{room_id}/receipt/m.read/$x", {"thread_id": deep}),
    ]
    for method, path, body in requests:
        answer = await raw(homeserver, method, path, attacker, with_deep(body, depth - 1))
        assert_error(answer, 400, "M_BAD_JSON")
    assert (await client.request("GET", "sync", token=attacker)).status == 200


async def test_event_content_at_the_limit_is_served_back(
    client: MatrixClient, pair: tuple[Account, Account, str]
) -> None:
    attacker, victim, room_id = pair
    before = await sync(client, victim)
    content = nested(MAX_DEPTH - 1, leaf={"msgtype": "m.text", "body": "deep"})
    content["body"] = "deep"
    path = f"rooms/{room_id}/send/m.room.message/t{next(_txn)}"
    event_id = (await client.request("PUT", path, content, attacker)).ok()["event_id"]
    after = await sync(client, victim, before["next_batch"])
    timeline = after["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"] for e in timeline if e["event_id"] == event_id] == [content]


# Item 4: U+0000 anywhere is refused before anything is queued --------------------------


async def test_nul_in_path_parameters(
    homeserver: HomeserverProcess, client: MatrixClient, pair: tuple[Account, Account, str]
) -> None:
    attacker, _, room_id = pair
    me = quote(attacker.user_id)
    paths = [
        ("PUT", f"rooms/{room_id}/send/m.room.message/t%00{next(_txn)}"),
        ("PUT", f"rooms/{room_id}/send/m.room%00.message/t{next(_txn)}"),
        ("PUT", f"rooms/{room_id}/state/m.test/a%00b"),
        ("PUT", f"rooms/{room_id}/state/m%00.test/"),
        ("PUT", f"user/{me}/account_data/m.x%00y"),
        ("PUT", f"user/{me}/rooms/{room_id}/account_data/m.x%00y"),
        ("PUT", f"directory/room/%23a%00b:{attacker.user_id.split(':', 1)[1]}"),
        ("PUT", "pushrules/global/override/r%00x"),
        ("PUT", f"devices/{attacker.device_id}%00"),
        ("GET", "/_matrix/client/v1/media/download/localhost/abc%00def"),
        ("GET", f"rooms/{room_id}/messages?from=%00"),
        ("GET", "sync?filter=%00"),
    ]
    for method, path in paths:
        answer = await raw(homeserver, method, path, attacker, b'{"msgtype": "m.text"}')
        assert answer.status == 400, (method, path, answer)
        assert answer.body["errcode"] in ("M_INVALID_PARAM", "M_UNRECOGNIZED"), answer.body


async def test_path_parameters_are_decoded_once(
    homeserver: HomeserverProcess, pair: tuple[Account, Account, str]
) -> None:
    """``%2500`` is the text ``%00``, not U+0000: a handler that decoded the already
    decoded parameter again reached the database with U+0000 (a 500 on PostgreSQL)."""
    attacker, _, room_id = pair
    server = attacker.user_id.split(":", 1)[1]
    paths = [
        ("GET", f"directory/list/room/!x:{server}%2500"),
        ("PUT", f"directory/list/room/!x:{server}%2500"),
        ("GET", f"directory/room/%23x%2500:{server}"),
        ("DELETE", f"directory/room/%23x%2500:{server}"),
        ("POST", f"join/!x%2500:{server}"),
        ("POST", f"join/%23x%2500:{server}"),
        ("POST", f"knock/!x%2500:{server}"),
        ("POST", f"knock/%23x%2500:{server}"),
        ("GET", f"profile/@x%2500:{server}"),
    ]
    for method, path in paths:
        answer = await raw(homeserver, method, path, attacker)
        assert answer.status in (400, 403, 404), (method, path, answer)
        assert "\x00" not in str(answer.body), answer.body
    alias = f"#decoded-once-{next(_txn)}:{server}"
    created = await raw(
        homeserver,
        "PUT",
        f"directory/room/{quote(alias)}",
        attacker,
        json.dumps({"room_id": room_id}).encode(),
    )
    assert created.status == 200, created
    found = await raw(homeserver, "GET", f"directory/room/{quote(alias)}", attacker)
    assert found.body["room_id"] == room_id


async def test_nul_in_bodies(client: MatrixClient, pair: tuple[Account, Account, str]) -> None:
    attacker, victim, room_id = pair
    me = quote(attacker.user_id)
    requests: list[tuple[str, str, Any, str | Account | None]] = [
        ("PUT", f"profile/{me}/displayname", {"displayname": "a\x00b"}, attacker),
        ("PUT", f"devices/{attacker.device_id}", {"display_name": "d\x00"}, attacker),
        ("POST", f"rooms/{room_id}/report", {"reason": "r\x00"}, attacker),
        ("POST", "keys/upload", {"one_time_keys": {"signed_curve25519:A\x00": "k"}}, attacker),
        ("PUT", f"rooms/{room_id}/send/m.room.message/t{next(_txn)}", {"b\x00": 1}, attacker),
        ("POST", "login", {"type": "m.login.password", "user": "a\x00", "password": "x"}, None),
        ("POST", "user_directory/search", {"search_term": "\x00"}, attacker),
        ("POST", "createRoom", {"room_alias_name": "a\x00b"}, attacker),
    ]
    for method, path, body, token in requests:
        answer = await client.request(method, path, body, token)
        assert_error(answer, 400, "M_BAD_JSON")
    profile = (await client.request("GET", f"profile/{me}", token=victim)).ok()
    assert "\x00" not in str(profile)


async def test_nul_sends_never_fail_other_users_sends(
    homeserver: HomeserverProcess, client: MatrixClient, pair: tuple[Account, Account, str]
) -> None:
    """The attack of the issue: one user loops a state event with U+0000 in its state key
    while another user sends in a room of their own; every send of the other user lands."""
    attacker, _, attacker_room = pair
    victim = await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=victim)).ok()["room_id"]
    stop = asyncio.Event()
    attacks = 0

    async def attack() -> None:
        nonlocal attacks
        deadline = asyncio.get_running_loop().time() + 30
        while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
            path = f"rooms/{attacker_room}/state/m.test/k%00{next(_txn)}"
            answer = await raw(homeserver, "PUT", path, attacker, b'{"a": "b\\u0000"}')
            assert answer.status == 400, answer
            attacks += 1

    async def send(i: int) -> int:
        path = f"rooms/{room_id}/send/m.room.message/v{next(_txn)}"
        answer = await client.request("PUT", path, {"msgtype": "m.text", "body": f"{i}"}, victim)
        return answer.status

    attackers = [asyncio.create_task(attack()) for _ in range(4)]
    try:
        statuses = await asyncio.gather(*(send(i) for i in range(120)))
    finally:
        stop.set()
        await asyncio.gather(*attackers)
    assert statuses == [200] * 120
    assert attacks > 0


# Item 5: integers within their columns' ranges ----------------------------------------


@pytest.mark.parametrize(
    ("score", "status"),
    [(2**63, 400), (2**64, 400), (-(2**63) - 1, 400), (1, 400), (-101, 400), (-100, 200), (0, 200)],
)
async def test_report_score_range(
    homeserver: HomeserverProcess,
    client: MatrixClient,
    pair: tuple[Account, Account, str],
    score: int,
    status: int,
) -> None:
    attacker, victim, room_id = pair
    path = f"rooms/{room_id}/send/m.room.message/t{next(_txn)}"
    event_id = (await client.request("PUT", path, {"body": "x"}, attacker)).ok()["event_id"]
    body = b'{"reason": "spam", "score": %d}' % score
    answer = await raw(homeserver, "POST", f"rooms/{room_id}/report/{event_id}", victim, body)
    assert answer.status == status, answer
    if status == 400:
        assert answer.body["errcode"] in ("M_INVALID_PARAM", "M_BAD_JSON"), answer.body


@pytest.mark.parametrize("param", ["limit=9223372036854775808", "limit=" + "9" * 30])
async def test_huge_query_integers(
    homeserver: HomeserverProcess, pair: tuple[Account, Account, str], param: str
) -> None:
    attacker, _, room_id = pair
    answer = await raw(homeserver, "GET", f"rooms/{room_id}/messages?{param}", attacker)
    assert_error(answer, 400, "M_INVALID_PARAM")


# Item 6: bounded search terms ---------------------------------------------------------


async def test_huge_user_directory_search_term(
    client: MatrixClient, pair: tuple[Account, Account, str]
) -> None:
    attacker, victim, _ = pair
    for term in ("a" * 70_000, "%_" * 35_000, victim.user_id * 300):
        body = {"search_term": term}
        answer = (await client.request("POST", "user_directory/search", body, attacker)).ok()
        assert answer == {"results": [], "limited": False}
    localpart = victim.user_id[1:].split(":")[0]
    found = (
        await client.request("POST", "user_directory/search", {"search_term": localpart}, attacker)
    ).ok()
    assert [r["user_id"] for r in found["results"]] == [victim.user_id]


async def test_errors_keep_the_connection_usable(homeserver: HomeserverProcess) -> None:
    """A refused body is answered in full: the same keep-alive connection serves on."""
    async with aiohttp.ClientSession() as session:
        url = f"{homeserver.base_url}{CLIENT_V3}/login"
        for _ in range(3):
            async with session.post(url, data=b'{"user": "\\u0000"}') as response:
                assert response.status == 400
            async with session.get(url) as response:
                assert response.status == 200
