"""Application services as requesters, over HTTP on every backend (Application Service
API, "Client-Server API Extensions"): the ``as_token`` is the appservice's bot, or with
``?user_id=`` a registered user of its namespace (403 M_FORBIDDEN outside it or for a
user never registered, 403 M_USER_DEACTIVATED once deactivated), with ``?device_id=``
one of that user's devices (400 M_UNKNOWN_DEVICE otherwise); ``?ts=`` sets the
``origin_server_ts`` of an appservice's event and is ignored for anyone else; an
appservice registered with ``rate_limited: false`` is never rate-limited, one without
is, also when it logs its users in, though its registrations take nothing from the
address's limit (as Synapse); and a token that is no one's, an ``hs_token``
included, stays 401 M_UNKNOWN_TOKEN.

The bridge's ghosts are registered by the bridge (``m.login.application_service``, its
namespace is exclusive); the other appservice's namespace is not exclusive, so a user of
it can register with a password and deactivate their account."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.appservice import write_registration
from harness.client import Account, MatrixClient, Response, new_session, unique_localpart
from harness.server import SERVER_NAME, HomeserverProcess, running_homeserver, start_homeserver

BRIDGE_TOKEN = "as-token-bridge"
LIMITED_TOKEN = "as-token-limited"
ELSEWHERE_TOKEN = "as-token-elsewhere"
BURST = 3
LOGIN_BURST = 20
# A timestamp in 2001: far from now, so honoured and ignored are told apart.
BRIDGED_TS = 1_000_000_000_000
_txn = itertools.count()


@pytest.fixture(scope="module")
def appservice_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """Two appservices with ghost namespaces, ``bridge`` not rate-limited and ``limited``
    rate-limited; rate limits on (a burst of 3 messages and of 20 registrations and
    logins, then one per 100 s)."""
    data_dir = tmp_path_factory.mktemp("appservice-auth")
    bridge = write_registration(
        data_dir / "bridge.yaml",
        appservice_id="bridge",
        url=None,
        as_token=BRIDGE_TOKEN,
        hs_token="hs-token-bridge",
        sender_localpart="bridgebot",
        user_regex=f"@ghost_.*:{SERVER_NAME}",
        rate_limited=False,
    )
    limited = write_registration(
        data_dir / "limited.yaml",
        appservice_id="limited",
        url=None,
        as_token=LIMITED_TOKEN,
        hs_token="hs-token-limited",
        sender_localpart="limitedbot",
        user_regex=f"@limited_.*:{SERVER_NAME}",
        exclusive=False,
    )
    # Its as_token is accepted only from 10.0.0.0/8: never from the tests' loopback.
    elsewhere = write_registration(
        data_dir / "elsewhere.yaml",
        appservice_id="elsewhere",
        url=None,
        as_token=ELSEWHERE_TOKEN,
        hs_token="hs-token-elsewhere",
        sender_localpart="elsewherebot",
        user_regex=f"@elsewhere_.*:{SERVER_NAME}",
        ip_range_whitelist=["10.0.0.0/8"],
    )
    options = {
        "app_service_config_files": f'["{bridge}", "{limited}", "{elsewhere}"]',
        "rate_limits.enabled": "true",
        "rate_limits.burst": str(BURST),
        "rate_limits.per_second": "0.01",
        "rate_limits.login_burst": str(LOGIN_BURST),
        "rate_limits.login_per_second": "0.01",
    }
    server = start_homeserver(backend, request, data_dir / "server", options=options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(appservice_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, appservice_homeserver.base_url)


def bot(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


async def register_ghost(client: MatrixClient) -> Account:
    """A ghost the bridge registers (Application Service API, "Server admin style
    permissions"), with a device and a token of its own."""
    body = {"type": "m.login.application_service", "username": unique_localpart("ghost_")}
    result = (await client.request("POST", "register", body, BRIDGE_TOKEN)).ok()
    return Account(result["user_id"], result["access_token"], result["device_id"], "")


async def whoami(client: MatrixClient, token: str, **params: str) -> Response:
    return await client.request("GET", "account/whoami", token=token, params=params)


async def send(
    client: MatrixClient, token: str | Account, room_id: str, body: str, **params: str
) -> Response:
    path = f"rooms/{quote(room_id)}/send/m.room.message/t{next(_txn)}"
    content = {"msgtype": "m.text", "body": body}
    return await client.request("PUT", path, content, token, params=params)


async def event(client: MatrixClient, reader: str, room_id: str, event_id: str) -> Any:
    path = f"rooms/{quote(room_id)}/event/{quote(event_id)}"
    return (await client.request("GET", path, token=reader)).ok()


async def bridge_room(client: MatrixClient, ghost: Account) -> str:
    """A room the bridge's bot creates, with ``ghost`` invited and joined (as the bridge)."""
    room_id: str = (
        await client.request("POST", "createRoom", {"preset": "public_chat"}, BRIDGE_TOKEN)
    ).ok()["room_id"]
    (
        await client.request(
            "POST", f"rooms/{quote(room_id)}/invite", {"user_id": ghost.user_id}, BRIDGE_TOKEN
        )
    ).ok()
    joined = await client.request(
        "POST", f"rooms/{quote(room_id)}/join", {}, BRIDGE_TOKEN, {"user_id": ghost.user_id}
    )
    joined.ok()
    return room_id


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, response.body
    assert response.body["errcode"] == errcode, response.body


async def test_the_as_token_is_the_bot_registered_at_start(client: MatrixClient) -> None:
    me = (await whoami(client, BRIDGE_TOKEN)).ok()
    assert me["user_id"] == bot("bridgebot")
    assert "device_id" not in me  # no device named, none used
    # The token in the query string names the appservice too.
    query = await client.request(
        "GET", "account/whoami", params={"access_token": BRIDGE_TOKEN, "user_id": me["user_id"]}
    )
    assert query.ok()["user_id"] == bot("bridgebot")
    # The bot is a registered user: it has a profile and can make a room of its own.
    profile = await client.request("GET", f"profile/{quote(bot('bridgebot'))}")
    assert profile.status == 200, profile.body
    room = (await client.request("POST", "createRoom", {}, BRIDGE_TOKEN)).ok()
    members = (
        await client.request(
            "GET", f"rooms/{quote(room['room_id'])}/joined_members", None, BRIDGE_TOKEN
        )
    ).ok()
    assert list(members["joined"]) == [bot("bridgebot")]


async def test_user_id_masquerades_within_the_namespace(client: MatrixClient) -> None:
    ghost = await register_ghost(client)
    assert (await whoami(client, BRIDGE_TOKEN, user_id=ghost.user_id)).ok()[
        "user_id"
    ] == ghost.user_id
    room_id = await bridge_room(client, ghost)
    sent = (await send(client, BRIDGE_TOKEN, room_id, "bridged", user_id=ghost.user_id)).ok()
    assert (await event(client, ghost.access_token, room_id, sent["event_id"]))[
        "sender"
    ] == ghost.user_id


async def test_user_id_outside_the_namespace_or_unregistered_is_forbidden(
    client: MatrixClient,
) -> None:
    outsider = await client.register()
    assert_error(await whoami(client, BRIDGE_TOKEN, user_id=outsider.user_id), 403, "M_FORBIDDEN")
    # The other appservice's bot and ghosts are not this one's.
    assert_error(await whoami(client, BRIDGE_TOKEN, user_id=bot("limitedbot")), 403, "M_FORBIDDEN")
    never = bot(unique_localpart("ghost_"))
    assert_error(await whoami(client, BRIDGE_TOKEN, user_id=never), 403, "M_FORBIDDEN")
    assert_error(await whoami(client, BRIDGE_TOKEN, user_id="not a user id"), 403, "M_FORBIDDEN")


async def test_a_deactivated_user_can_no_longer_be_acted_as(client: MatrixClient) -> None:
    ghost = await client.register(unique_localpart("limited_"))
    # Acted as once, so the server knows it as active ...
    (await whoami(client, LIMITED_TOKEN, user_id=ghost.user_id)).ok()
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": ghost.user_id},
        "password": ghost.password,
    }
    (await client.request("POST", "account/deactivate", {"auth": auth}, ghost)).ok()
    # ... and forgets it when it is deactivated.
    assert_error(
        await whoami(client, LIMITED_TOKEN, user_id=ghost.user_id), 403, "M_USER_DEACTIVATED"
    )


async def test_device_id_names_a_device_of_the_user(client: MatrixClient) -> None:
    ghost = await register_ghost(client)
    for name in ("device_id", "org.matrix.msc3202.device_id"):
        me = (
            await whoami(client, BRIDGE_TOKEN, user_id=ghost.user_id, **{name: ghost.device_id})
        ).ok()
        assert (me["user_id"], me["device_id"]) == (ghost.user_id, ghost.device_id)
        assert_error(
            await whoami(client, BRIDGE_TOKEN, user_id=ghost.user_id, **{name: "NOSUCHDEVICE"}),
            400,
            "M_UNKNOWN_DEVICE",
        )
    # Without user_id the device must be the bot's.
    assert_error(
        await whoami(client, BRIDGE_TOKEN, device_id=ghost.device_id), 400, "M_UNKNOWN_DEVICE"
    )


async def test_ts_sets_origin_server_ts_for_the_appservice_only(client: MatrixClient) -> None:
    ghost = await register_ghost(client)
    room_id = await bridge_room(client, ghost)
    ts = str(BRIDGED_TS)
    sent = (await send(client, BRIDGE_TOKEN, room_id, "then", user_id=ghost.user_id, ts=ts)).ok()
    stored = await event(client, ghost.access_token, room_id, sent["event_id"])
    assert stored["origin_server_ts"] == BRIDGED_TS
    topic_path = f"rooms/{quote(room_id)}/state/m.room.topic/"
    state = (
        await client.request("PUT", topic_path, {"topic": "old"}, BRIDGE_TOKEN, {"ts": ts})
    ).ok()
    stored = await event(client, ghost.access_token, room_id, state["event_id"])
    assert stored["origin_server_ts"] == BRIDGED_TS
    # Member events through the state endpoint too (a bridged join, then the bot's kick).
    other = await register_ghost(client)
    (
        await client.request(
            "POST", f"rooms/{quote(room_id)}/invite", {"user_id": other.user_id}, BRIDGE_TOKEN
        )
    ).ok()
    member_path = f"rooms/{quote(room_id)}/state/m.room.member/{quote(other.user_id)}"
    for membership, params in (
        ("join", {"ts": ts, "user_id": other.user_id}),
        ("leave", {"ts": str(BRIDGED_TS + 1)}),
    ):
        member = await client.request(
            "PUT", member_path, {"membership": membership}, BRIDGE_TOKEN, params
        )
        stored = await event(client, ghost.access_token, room_id, member.ok()["event_id"])
        assert (stored["content"]["membership"], stored["origin_server_ts"]) == (
            membership,
            int(params["ts"]),
        )
    # An ordinary user's ts is ignored: the event is stamped now.
    before_ms = int(time.time() * 1000)
    own = (await send(client, ghost, room_id, "now", ts=ts)).ok()
    stored = await event(client, ghost.access_token, room_id, own["event_id"])
    assert stored["origin_server_ts"] >= before_ms - 5_000
    for bad in ("soon", "", "-1", "1.5", str(2**53)):
        assert_error(
            await send(client, BRIDGE_TOKEN, room_id, "bad", ts=bad), 400, "M_INVALID_PARAM"
        )


async def test_rate_limited_false_is_never_limited(client: MatrixClient) -> None:
    ghost = await register_ghost(client)
    room_id = await bridge_room(client, ghost)
    for number in range(3 * BURST):
        (await send(client, BRIDGE_TOKEN, room_id, f"bridged {number}")).ok()
        (await send(client, BRIDGE_TOKEN, room_id, f"ghost {number}", user_id=ghost.user_id)).ok()
    # The same ghost with its own token is limited as anyone is.
    statuses = [(await send(client, ghost, room_id, "own")).status for _ in range(BURST + 1)]
    assert statuses[-1] == 429, statuses


async def test_rate_limited_false_registers_any_number_of_users(client: MatrixClient) -> None:
    ghosts = [await register_ghost(client) for _ in range(LOGIN_BURST + 5)]
    assert len({ghost.user_id for ghost in ghosts}) == LOGIN_BURST + 5


async def test_a_rate_limited_appservice_is_limited(client: MatrixClient) -> None:
    room_id = (await client.request("POST", "createRoom", {}, LIMITED_TOKEN)).ok()["room_id"]
    statuses = [
        (await send(client, LIMITED_TOKEN, room_id, "limited")).status for _ in range(BURST + 1)
    ]
    assert statuses[-1] == 429, statuses


async def test_other_tokens_are_still_unknown(client: MatrixClient) -> None:
    for token in ("nonsense", "hs-token-bridge", BRIDGE_TOKEN + "x", ELSEWHERE_TOKEN):
        assert_error(await whoami(client, token), 401, "M_UNKNOWN_TOKEN")
    # An as_token from outside its registration's ip_range_whitelist is no one's, also
    # where an appservice registers its users.
    body = {"type": "m.login.application_service", "username": "elsewhere_1"}
    registered = await client.request("POST", "register", body, ELSEWHERE_TOKEN)
    assert_error(registered, 401, "M_UNKNOWN_TOKEN")
    # An ordinary user's user_id parameter changes nothing.
    user = await client.register()
    other = await client.register()
    me = (await whoami(client, user.access_token, user_id=other.user_id)).ok()
    assert me["user_id"] == user.user_id


async def test_keys_upload_needs_a_device(client: MatrixClient) -> None:
    """Without ``device_id`` an appservice request has no device: no keys to upload."""
    response = await client.request("POST", "keys/upload", {"one_time_keys": {}}, BRIDGE_TOKEN)
    assert_error(response, 400, "M_UNKNOWN")
    ghost = await register_ghost(client)
    params = {"user_id": ghost.user_id, "device_id": ghost.device_id}
    counts = await client.request("POST", "keys/upload", {}, BRIDGE_TOKEN, params)
    assert "one_time_key_counts" in counts.ok()


async def test_a_reload_registers_the_bot_of_an_added_appservice(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGHUP reads the registrations again: the new appservice's token is its bot, a
    registered user; the token of the one gone is no one's."""

    def register(number: int) -> Path:
        return write_registration(
            tmp_path / "reloaded.yaml",
            appservice_id=f"reloaded{number}",
            url=None,
            as_token=f"as-token-reloaded-{number}",
            hs_token=f"hs-token-reloaded-{number}",
            sender_localpart=f"reloadedbot{number}",
            user_regex=f"@reloaded{number}_.*:{SERVER_NAME}",
        )

    options = {"app_service_config_files": f'["{register(1)}"]'}
    with running_homeserver(backend, request, tmp_path / "server", options=options) as server:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)
            assert (await whoami(client, "as-token-reloaded-1")).ok()["user_id"] == bot(
                "reloadedbot1"
            )
            register(2)
            os.kill(server.pid, signal.SIGHUP)
            profile_path = f"profile/{quote(bot('reloadedbot2'))}"
            for _ in range(100):  # the bot is registered just after the reload
                if (await client.request("GET", profile_path)).status == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the added appservice's bot was not registered within 10 s")
            me = (await whoami(client, "as-token-reloaded-2")).ok()
            assert me["user_id"] == bot("reloadedbot2")
            assert_error(await whoami(client, "as-token-reloaded-1"), 401, "M_UNKNOWN_TOKEN")


async def test_appservice_registrations_take_nothing_from_the_ip_limit(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """As Synapse: an appservice's registrations (``m.login.application_service``, also with
    the default ``rate_limited: true``) take nothing from the address's registration and
    login limit, only being refused while the address is over it (as any registration is);
    its logins, rate-limited, draw on it (``rc_login.address``)."""
    burst = 3
    registration = write_registration(
        tmp_path / "drawing.yaml",
        appservice_id="drawing",
        url=None,
        as_token="as-token-drawing",
        hs_token="hs-token-drawing",
        sender_localpart="drawingbot",
        user_regex=f"@drawing_.*:{SERVER_NAME}",
    )
    options = {
        "app_service_config_files": f'["{registration}"]',
        "rate_limits.enabled": "true",
        "rate_limits.login_burst": str(burst),
        "rate_limits.login_per_second": "0.01",
    }
    with running_homeserver(backend, request, tmp_path / "server", options=options) as server:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)

            async def register() -> Response:
                body = {
                    "type": "m.login.application_service",
                    "username": unique_localpart("drawing_"),
                }
                return await client.request("POST", "register", body, "as-token-drawing")

            ghosts = [(await register()).ok()["user_id"] for _ in range(burst + 2)]
            assert len(set(ghosts)) == burst + 2

            async def login() -> Response:
                body = {
                    "type": "m.login.application_service",
                    "identifier": {"type": "m.id.user", "user": ghosts[0]},
                }
                return await client.request("POST", "login", body, "as-token-drawing")

            for _ in range(burst):
                (await login()).ok()
            assert_error(await login(), 429, "M_LIMIT_EXCEEDED")
            assert_error(await register(), 429, "M_LIMIT_EXCEEDED")
