"""TURN credentials over HTTP on every backend (Client-Server API, "Voice over IP", GET
/_matrix/client/v3/voip/turnServer), accepted by a real coturn: time-limited ones from a
shared secret (refused by coturn once expired), static ones, ``{}`` without TURN, and
guests only when allowed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from harness.client import Account, MatrixClient, new_session
from harness.coturn import CoturnProcess, CoturnUnavailable, find_coturn
from harness.required import require_installed
from harness.server import HomeserverProcess, start_homeserver
from peyvand.services.calls.turn import rest_api_credentials

SECRET = "turn-secret-for-tests"
LIFETIME = 600
PATH = "voip/turnServer"


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoturnProcess]:
    require_installed("coturn", find_coturn, CoturnUnavailable)
    server = CoturnProcess(tmp_path_factory.mktemp("coturn"), SECRET)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _guests(options: dict[str, str]) -> dict[str, str]:
    return {"registration.allow_guest_access": "true", **options}


@pytest.fixture(scope="module")
def turn_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    coturn: CoturnProcess,
) -> Iterator[HomeserverProcess]:
    """Credentials from the secret coturn shares; no guests."""
    uris = f'["turn:127.0.0.1:{coturn.port}?transport=udp"]'
    options = {
        "voip.turn_uris": uris,
        "voip.turn_shared_secret": f'"{SECRET}"',
        "voip.turn_user_lifetime": str(LIFETIME),
        "voip.turn_allow_guests": "false",
    }
    server = start_homeserver(
        backend, request, tmp_path_factory.mktemp("turn"), options=_guests(options)
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def turn_client(turn_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, turn_homeserver.base_url)


async def register_guest(client: MatrixClient) -> Account:
    body = (await client.request("POST", "register", json={}, params={"kind": "guest"})).ok()
    return Account(body["user_id"], body["access_token"], body["device_id"], "")


async def test_no_turn_configured(client: MatrixClient) -> None:
    alice = await client.register()
    assert (await client.request("GET", PATH, token=alice)).ok() == {}
    anonymous = await client.request("GET", PATH)
    assert anonymous.status == 401, anonymous.body
    assert anonymous.body["errcode"] == "M_MISSING_TOKEN"


async def test_time_limited_credentials_allocate_a_relay(
    turn_client: MatrixClient, coturn: CoturnProcess
) -> None:
    alice = await turn_client.register()
    before = int(time.time())
    body = (await turn_client.request("GET", PATH, token=alice)).ok()
    after = int(time.time())
    assert body["uris"] == [f"turn:127.0.0.1:{coturn.port}?transport=udp"]
    assert body["ttl"] == LIFETIME
    expiry, _, user_id = body["username"].partition(":")
    assert user_id == alice.user_id
    assert before + LIFETIME <= int(expiry) <= after + LIFETIME
    mac = hmac.new(SECRET.encode(), body["username"].encode(), hashlib.sha1).digest()
    assert body["password"] == base64.b64encode(mac).decode()

    allocation = coturn.allocate(body["username"], body["password"])
    assert allocation.succeeded, f"{allocation.output}\n{coturn.log()}"
    # Another last character (16 are possible there: "A" one time in 16, which made
    # the wrong password the right one).
    other = "E=" if body["password"].endswith("A=") else "A="
    wrong = coturn.allocate(body["username"], body["password"][:-2] + other)
    assert not wrong.succeeded, wrong.output


async def test_expired_credentials_are_refused(
    turn_client: MatrixClient, coturn: CoturnProcess
) -> None:
    alice = await turn_client.register()
    username, password = rest_api_credentials(SECRET, alice.user_id, int(time.time()) - 5)
    allocation = coturn.allocate(username, password)
    assert not allocation.succeeded, allocation.output
    assert f"Cannot find credentials of user <{username}>" in coturn.log()


async def test_guests_refused_when_not_allowed(turn_client: MatrixClient) -> None:
    guest = await register_guest(turn_client)
    refused = await turn_client.request("GET", PATH, token=guest)
    assert refused.status == 403, refused.body
    assert refused.body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_static_credentials_and_guests(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    options = {
        "voip.turn_uris": '["turns:turn.example.org:443?transport=tcp"]',
        "voip.turn_username": '"calls"',
        "voip.turn_password": '"hunter2"',
    }
    server = start_homeserver(
        backend, request, tmp_path_factory.mktemp("static-turn"), options=_guests(options)
    )
    try:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)
            guest = await register_guest(client)
            body = (await client.request("GET", PATH, token=guest)).ok()
    finally:
        server.stop()
    assert body == {
        "username": "calls",
        "password": "hunter2",
        "uris": ["turns:turn.example.org:443?transport=tcp"],
        "ttl": 3600,
    }
