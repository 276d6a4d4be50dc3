"""Guest accounts over HTTP on every backend (Client-Server API, "Guest Access"):
registration with kind=guest behind ``registration.allow_guest_access``, the endpoints
guests may use, joining only rooms that let guests in (and leaving when that changes),
upgrading to a full account."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.appservice import write_registration
from harness.client import DEFAULT_PASSWORD, Account, MatrixClient, new_session
from harness.server import HomeserverProcess, running_homeserver, start_homeserver

_txn = itertools.count()


@pytest.fixture(scope="module")
def guest_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    server = start_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("guests"),
        options={"registration.open": "true", "registration.allow_guest_access": "true"},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def guests(guest_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, guest_server.base_url)


async def register_guest(client: MatrixClient) -> Account:
    body = (await client.request("POST", "register", json={}, params={"kind": "guest"})).ok()
    return Account(body["user_id"], body["access_token"], body["device_id"], "")


async def guest_room(client: MatrixClient, owner: Account, access: str | None) -> str:
    initial_state = (
        [{"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": access}}]
        if access
        else []
    )
    body = {"preset": "public_chat", "initial_state": initial_state}
    room_id: str = (await client.request("POST", "createRoom", json=body, token=owner)).ok()[
        "room_id"
    ]
    return room_id


async def membership(client: MatrixClient, room_id: str, reader: Account, user_id: str) -> Any:
    response = await client.request(
        "GET", f"rooms/{room_id}/state/m.room.member/{user_id}", token=reader
    )
    return response.ok()["membership"]


async def test_guests_are_refused_unless_allowed(client: MatrixClient) -> None:
    refused = await client.request("POST", "register", json={}, params={"kind": "guest"})
    assert refused.status == 403 and refused.body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_guest_registration_and_allowed_endpoints(guests: MatrixClient) -> None:
    guest = await register_guest(guests)
    assert guest.user_id[1:].split(":")[0].isdigit()
    whoami = (await guests.request("GET", "account/whoami", token=guest)).ok()
    assert whoami == {"user_id": guest.user_id, "device_id": guest.device_id, "is_guest": True}
    (await guests.request("GET", "sync", token=guest, params={"timeout": "0"})).ok()
    for method, path in (("POST", "createRoom"), ("GET", "pushrules/"), ("POST", "publicRooms")):
        forbidden = await guests.request(method, path, json={}, token=guest)
        assert forbidden.status == 403, (path, forbidden.body)
        assert forbidden.body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    # Guests only peek with /events: they must name a room.
    stream = await guests.request("GET", "events", token=guest, params={"timeout": "0"})
    assert stream.status == 403 and stream.body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    # Guests browse spaces, as Synapse lets them.
    space = await guest_room(guests, await guests.register(), None)
    path = f"/_matrix/client/v1/rooms/{space}/hierarchy"
    rooms = (await guests.request("GET", path, token=guest)).ok()["rooms"]
    assert [room["room_id"] for room in rooms] == [space]


async def test_guests_join_only_can_join_rooms_and_leave_when_revoked(
    guests: MatrixClient,
) -> None:
    owner = await guests.register()
    guest = await register_guest(guests)
    closed = await guest_room(guests, owner, None)
    refused = await guests.request("POST", f"rooms/{closed}/join", json={}, token=guest)
    assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN"

    open_room = await guest_room(guests, owner, "can_join")
    (await guests.request("POST", f"rooms/{open_room}/join", json={}, token=guest)).ok()
    sent = await guests.request(
        "PUT",
        f"rooms/{open_room}/send/m.room.message/g{next(_txn)}",
        json={"msgtype": "m.text", "body": "sup"},
        token=guest,
    )
    sent.ok()
    assert await membership(guests, open_room, owner, guest.user_id) == "join"

    (
        await guests.request(
            "PUT",
            f"rooms/{open_room}/state/m.room.guest_access",
            json={"guest_access": "forbidden"},
            token=owner,
        )
    ).ok()
    for _ in range(50):
        if await membership(guests, open_room, owner, guest.user_id) == "leave":
            break
        await asyncio.sleep(0.1)
    assert await membership(guests, open_room, owner, guest.user_id) == "leave"


async def test_guest_upgrades_to_a_full_account(guests: MatrixClient) -> None:
    guest, other = await register_guest(guests), await register_guest(guests)
    localpart = guest.user_id[1:].split(":")[0]
    body: dict[str, Any] = {
        "username": localpart,
        "password": DEFAULT_PASSWORD,
        "guest_access_token": other.access_token,
        "auth": {"type": "m.login.dummy"},
    }
    # Another guest's token cannot take this guest's account.
    assert (await guests.request("POST", "register", json=body)).status == 403
    body["guest_access_token"] = guest.access_token
    first = await guests.request("POST", "register", json=body)
    if first.status == 401:
        body["auth"]["session"] = first.body["session"]
        first = await guests.request("POST", "register", json=body)
    upgraded = first.ok()
    assert upgraded["user_id"] == guest.user_id
    whoami = await guests.request("GET", "account/whoami", token=upgraded["access_token"])
    assert whoami.ok()["is_guest"] is False
    # The guest session ended; the account can create rooms and log in with its password.
    assert (await guests.request("GET", "account/whoami", token=guest)).status == 401
    created = await guests.request("POST", "createRoom", json={}, token=upgraded["access_token"])
    created.ok()
    await guests.login(localpart)


async def test_a_guest_in_an_exclusive_namespace_cannot_be_upgraded(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An appservice claiming numeric user IDs exclusively: a guest's ID is one, so it
    cannot become a full account under it (M_EXCLUSIVE, as any registration there)."""
    claimed = write_registration(
        tmp_path / "numbers.yaml",
        appservice_id="numbers",
        url=None,
        as_token="as-token-numbers",
        hs_token="hs-token-numbers",
        sender_localpart="numbersbot",
        user_regex="@[0-9]+:",
    )
    options = {
        "registration.open": "true",
        "registration.allow_guest_access": "true",
        "app_service_config_files": f'["{claimed}"]',
    }
    with running_homeserver(backend, request, tmp_path / "server", options=options) as server:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)
            guest = await register_guest(client)
            body: dict[str, Any] = {
                "username": guest.user_id[1:].split(":")[0],
                "password": DEFAULT_PASSWORD,
                "guest_access_token": guest.access_token,
                "auth": {"type": "m.login.dummy"},
            }
            answer = await client.request("POST", "register", json=body)
            assert (answer.status, answer.body.get("errcode")) == (400, "M_EXCLUSIVE"), answer.body
