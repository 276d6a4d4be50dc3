"""Property tests over HTTP (issue 12): whatever JSON a client sends to an endpoint that
stores it is either refused with a 4xx or accepted, and what is accepted is served back
unchanged (GET, /sync, room state) without a 500, to the sender and to others."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from harness.client import CLIENT_V3, Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess

_txn = itertools.count()
REFUSALS = {"M_BAD_JSON", "M_NOT_JSON", "M_TOO_LARGE", "M_INVALID_PARAM"}

leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**66), 2**66)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object, sometimes buried under 100 to 300 levels."""
    value: Any = draw(st.dictionaries(st.text(max_size=8), values, max_size=5))
    if draw(st.integers(0, 4)) == 0:
        for _ in range(draw(st.integers(100, 300))):
            value = {"d": value}
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Setup:
    sender: Account
    reader: Account
    room_id: str


@pytest.fixture(scope="module")
async def setup(homeserver: HomeserverProcess) -> AsyncIterator[Setup]:
    async with new_session() as session:
        client = MatrixClient(session, homeserver.base_url)
        sender, reader = await client.register(), await client.register()
        created = await client.request("POST", "createRoom", {"preset": "public_chat"}, sender)
        room_id = created.ok()["room_id"]
        (await client.request("POST", f"rooms/{room_id}/join", {}, reader)).ok()
        yield Setup(sender, reader, room_id)


async def request(
    homeserver: HomeserverProcess, method: str, path: str, account: Account, body: Any = None
) -> Response:
    """A request whose body is encoded here (the standard library writes any depth)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {account.access_token}"}
    url = URL(f"{homeserver.base_url}{CLIENT_V3}/{path}", encoded=True)
    async with (
        new_session() as session,
        session.request(method, url, data=data, headers=headers) as response,
    ):
        parsed = orjson.loads(await response.read())
    assert response.status < 500, (method, path, parsed)
    return Response(response.status, parsed)


def as_server_sees(value: Any) -> Any:
    """``value`` as the server parses it (orjson: integers beyond 64 bits become floats)."""
    return orjson.loads(json.dumps(value))


def accepted(response: Response) -> bool:
    if response.status == 200:
        return True
    assert response.status == 400 and response.body["errcode"] in REFUSALS, response
    return False


async def sync(homeserver: HomeserverProcess, account: Account, since: str | None) -> Any:
    query = "timeout=0" + (f"&since={since}" if since else "")
    answer = await request(homeserver, "GET", f"sync?{query}", account)
    assert answer.status == 200, answer
    return answer.body


_settings = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_settings
@given(content=objects())
async def test_account_data_round_trip(
    homeserver: HomeserverProcess, setup: Setup, content: dict[str, Any]
) -> None:
    user = setup.sender
    since = (await sync(homeserver, user, None))["next_batch"]
    kind = f"m.fuzz.{next(_txn)}"
    me = quote(user.user_id)
    room_path = f"user/{me}/rooms/{setup.room_id}/account_data/{kind}"
    for path in (f"user/{me}/account_data/{kind}", room_path):
        if not accepted(await request(homeserver, "PUT", path, user, content)):
            continue
        served = await request(homeserver, "GET", path, user)
        assert served.body == as_server_sees(content)
    await sync(homeserver, user, since)
    await sync(homeserver, user, None)


@_settings
@given(content=objects())
async def test_to_device_round_trip(
    homeserver: HomeserverProcess, setup: Setup, content: dict[str, Any]
) -> None:
    reader = setup.reader
    since = (await sync(homeserver, reader, None))["next_batch"]
    body = {"messages": {reader.user_id: {reader.device_id: content}}}
    sent = await request(
        homeserver, "PUT", f"sendToDevice/m.fuzz/t{next(_txn)}", setup.sender, body
    )
    delivered = (await sync(homeserver, reader, since)).get("to_device", {}).get("events", [])
    if accepted(sent):
        assert [e["content"] for e in delivered] == [as_server_sees(content)]
    else:
        assert delivered == []


@_settings
@given(content=objects())
async def test_event_content_round_trip(
    homeserver: HomeserverProcess, setup: Setup, content: dict[str, Any]
) -> None:
    since = (await sync(homeserver, setup.reader, None))["next_batch"]
    key = f"k{next(_txn)}"
    state_path = f"rooms/{setup.room_id}/state/m.fuzz/{key}"
    message_path = f"rooms/{setup.room_id}/send/m.fuzz/t{next(_txn)}"
    sent_ids = {}
    for path in (state_path, message_path):
        answer = await request(homeserver, "PUT", path, setup.sender, content)
        if accepted(answer):
            sent_ids[answer.body["event_id"]] = path
    timeline = (await sync(homeserver, setup.reader, since))["rooms"]["join"]
    events = timeline[setup.room_id]["timeline"]["events"] if sent_ids else []
    seen = {e["event_id"]: e["content"] for e in events}
    for event_id in sent_ids:
        assert seen[event_id] == as_server_sees(content)
        served = await request(
            homeserver, "GET", f"rooms/{setup.room_id}/event/{event_id}", setup.reader
        )
        assert served.body["content"] == as_server_sees(content)
    if state_path in sent_ids.values():
        served = await request(homeserver, "GET", state_path, setup.reader)
        assert served.body == as_server_sees(content)
        state = await request(homeserver, "GET", f"rooms/{setup.room_id}/state", setup.reader)
        assert state.status == 200
