"""Application services registering and logging in as their users, over HTTP on every
backend (Application Service API, "Server admin style permissions"): the
``m.login.application_service`` type of POST /register and POST /login with the
``as_token``, the namespaces enforced both ways (M_EXCLUSIVE), the token errors, and an
MSC4190 appservice that manages devices itself refused any login."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.appservice import write_registration
from harness.client import MatrixClient, Response, new_session
from harness.server import HomeserverProcess, running_homeserver

AS_TOKEN = "as-token-registration-bridge"
E2E_AS_TOKEN = "as-token-registration-e2e"
AS_LOGIN = "m.login.application_service"
MSC4190: dict[str, Any] = {"io.element.msc4190": True}

_names = itertools.count()


def _localpart(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


@pytest.fixture(scope="module")
def appservice_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    directory = tmp_path_factory.mktemp("appservice-registration")
    files = [
        write_registration(
            directory / "bridge.yaml",
            appservice_id="bridge",
            url=None,
            as_token=AS_TOKEN,
            hs_token="hs-token-registration-bridge",
            sender_localpart="bridgebot",
            user_regex="@bridge_[^:]*:.*",
        ),
        write_registration(
            directory / "e2e.yaml",
            appservice_id="e2e",
            url=None,
            as_token=E2E_AS_TOKEN,
            hs_token="hs-token-registration-e2e",
            sender_localpart="e2ebot",
            user_regex="@e2e_[^:]*:.*",
            **MSC4190,
        ),
        write_registration(
            directory / "shared.yaml",
            appservice_id="shared",
            url=None,
            as_token="as-token-registration-shared",
            hs_token="hs-token-registration-shared",
            sender_localpart="sharedbot",
            user_regex="@shared_[^:]*:.*",
            exclusive=False,
        ),
    ]
    paths = ", ".join(f'"{Path(f).resolve()}"' for f in files)
    with running_homeserver(
        backend, request, directory, options={"app_service_config_files": f"[{paths}]"}
    ) as server:
        yield server


@pytest.fixture
async def hs(appservice_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, appservice_server.base_url)


async def as_register(
    client: MatrixClient, username: Any, token: str | None = AS_TOKEN, **extra: Any
) -> Response:
    body = {"type": AS_LOGIN, "username": username, **extra}
    return await client.request("POST", "register", json=body, token=token)


async def as_login(client: MatrixClient, user: str, token: str | None = AS_TOKEN) -> Response:
    body = {"type": AS_LOGIN, "identifier": {"type": "m.id.user", "user": user}}
    return await client.request("POST", "login", json=body, token=token)


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert (response.status, response.body.get("errcode")) == (status, errcode), response.body


async def test_appservice_registers_users_of_its_namespace(hs: MatrixClient) -> None:
    localpart = _localpart("bridge_alice")
    registered = (await as_register(hs, localpart, device_id="BRIDGEDEV")).ok()
    user_id = registered["user_id"]
    assert user_id.startswith(f"@{localpart}:") and registered["device_id"] == "BRIDGEDEV"
    whoami = (await hs.request("GET", "account/whoami", token=registered["access_token"])).ok()
    assert (whoami["user_id"], whoami["device_id"]) == (user_id, "BRIDGEDEV")

    quiet = (await as_register(hs, _localpart("bridge_quiet"), inhibit_login=True)).ok()
    assert "access_token" not in quiet and "device_id" not in quiet

    assert_error(await as_register(hs, localpart), 400, "M_USER_IN_USE")
    assert_error(await as_register(hs, _localpart("carol")), 400, "M_EXCLUSIVE")
    # Another appservice's exclusive namespace.
    assert_error(await as_register(hs, _localpart("e2e_x")), 400, "M_EXCLUSIVE")
    # Bridges name ghosts after remote IDs: the historical grammar (capitals) is accepted,
    # what is no user ID at all is not.
    upper = _localpart("bridge_U0ABC")
    assert (await as_register(hs, upper)).ok()["user_id"].startswith(f"@{upper}:")
    for invalid in ("bridge_a b", "bridge_a:b", "bridge_\u00e9"):
        assert_error(await as_register(hs, invalid), 400, "M_INVALID_USERNAME")
    assert_error(await as_register(hs, None), 400, "M_MISSING_PARAM")
    assert_error(await as_register(hs, 5), 400, "M_BAD_JSON")


async def test_appservice_registration_needs_its_token(hs: MatrixClient) -> None:
    assert_error(await as_register(hs, _localpart("bridge_x"), token=None), 401, "M_MISSING_TOKEN")
    unknown = await as_register(hs, _localpart("bridge_x"), token="not-an-as-token")
    assert_error(unknown, 401, "M_UNKNOWN_TOKEN")
    # A user's access token is no appservice's either.
    user = await hs.register()
    assert_error(
        await as_register(hs, _localpart("bridge_x"), token=user.access_token),
        401,
        "M_UNKNOWN_TOKEN",
    )


async def test_exclusive_namespaces_are_refused_to_others(hs: MatrixClient) -> None:
    for username in (_localpart("bridge_eve"), "bridgebot"):
        available = await hs.request("GET", "register/available", params={"username": username})
        assert_error(available, 400, "M_EXCLUSIVE")
        body = {"username": username, "password": "a long enough password"}
        assert_error(await hs.request("POST", "register", json=body), 400, "M_EXCLUSIVE")
    # A non-exclusive namespace stays open to everyone.
    shared = _localpart("shared_eve")
    available = await hs.request("GET", "register/available", params={"username": shared})
    assert available.ok() == {"available": True}
    assert (await hs.register(shared)).user_id.startswith(f"@{shared}:")


async def test_appservice_logs_in_as_its_users(hs: MatrixClient) -> None:
    flows = (await hs.request("GET", "login")).ok()["flows"]
    assert {"type": AS_LOGIN} in flows and {"type": "m.login.password"} in flows
    localpart = _localpart("bridge_bob")
    user_id = (await as_register(hs, localpart, inhibit_login=True)).ok()["user_id"]

    for identifier in (localpart, user_id):
        session = (await as_login(hs, identifier)).ok()
        assert session["user_id"] == user_id
        whoami = (await hs.request("GET", "account/whoami", token=session["access_token"])).ok()
        assert whoami == {"user_id": user_id, "device_id": session["device_id"], "is_guest": False}

    assert_error(await as_login(hs, _localpart("carol")), 400, "M_EXCLUSIVE")
    assert_error(await as_login(hs, _localpart("bridge_never")), 403, "M_FORBIDDEN")
    assert_error(await as_login(hs, localpart, token=None), 401, "M_MISSING_TOKEN")
    assert_error(await as_login(hs, localpart, token="not-an-as-token"), 401, "M_UNKNOWN_TOKEN")
    # The account has no password: no password logs it in.
    password_login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": "",
    }
    assert_error(await hs.request("POST", "login", json=password_login), 403, "M_FORBIDDEN")


async def test_msc4190_appservice_cannot_log_in(hs: MatrixClient) -> None:
    localpart = _localpart("e2e_dave")
    refused = await as_register(hs, localpart, token=E2E_AS_TOKEN)
    assert_error(refused, 400, "M_APPSERVICE_LOGIN_UNSUPPORTED")
    registered = (await as_register(hs, localpart, token=E2E_AS_TOKEN, inhibit_login=True)).ok()
    assert "access_token" not in registered
    assert_error(
        await as_login(hs, localpart, token=E2E_AS_TOKEN), 400, "M_APPSERVICE_LOGIN_UNSUPPORTED"
    )


async def test_appservice_users_are_ordinary_accounts(hs: MatrixClient) -> None:
    """A registered appservice user has a profile, joins rooms and is found in the user
    directory like anyone."""
    session = (await as_register(hs, _localpart("bridge_frank"))).ok()
    user_id, token = session["user_id"], session["access_token"]
    (await hs.request("GET", f"profile/{user_id}")).ok()
    human = await hs.register()
    room_id = (
        await hs.request("POST", "createRoom", json={"preset": "public_chat"}, token=human)
    ).ok()["room_id"]
    (await hs.request("POST", f"join/{room_id}", json={}, token=token)).ok()
    search = {"search_term": user_id.split(":")[0][1:]}
    found = (await hs.request("POST", "user_directory/search", json=search, token=human)).ok()
    assert user_id in [r["user_id"] for r in found["results"]]


async def test_appservice_deactivates_its_users_without_uia(hs: MatrixClient) -> None:
    """A ghost has no password for User-Interactive Authentication: its appservice
    deactivates it with the as_token alone (as Synapse); an ordinary token still needs
    UIA, even the ghost's own device."""
    registered = (await as_register(hs, _localpart("bridge_leaving"))).ok()
    user_id = registered["user_id"]
    own = await hs.request("POST", "account/deactivate", {}, registered["access_token"])
    assert own.status == 401 and "flows" in own.body, own.body
    params = {"user_id": user_id}
    answer = await hs.request("POST", "account/deactivate", {}, AS_TOKEN, params=params)
    assert answer.ok() == {"id_server_unbind_result": "no-support"}
    gone = await hs.request("GET", "account/whoami", token=AS_TOKEN, params=params)
    assert_error(gone, 403, "M_USER_DEACTIVATED")
    assert_error(await as_login(hs, user_id), 403, "M_USER_DEACTIVATED")
