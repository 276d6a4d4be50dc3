"""Application services managing their users' devices, over HTTP on every backend
(Application Service API, "Device management", spec v1.17 and MSC4190): PUT
/devices/{deviceId} creates a device (201) or updates it (200), DELETE /devices/{deviceId}
and POST /delete_devices need no User-Interactive Authentication; for ordinary users
nothing changes (404 for an unknown device, UIA to delete)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from harness.appservice import write_registration
from harness.client import MatrixClient, Response, new_session
from harness.server import HomeserverProcess, running_homeserver

AS_TOKEN = "as-token-devices-e2e"
MSC4190: dict[str, Any] = {"io.element.msc4190": True}

_names = itertools.count()


@pytest.fixture(scope="module")
def devices_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    directory = tmp_path_factory.mktemp("appservice-devices")
    registration = write_registration(
        directory / "e2e.yaml",
        appservice_id="e2e-devices",
        url=None,
        as_token=AS_TOKEN,
        hs_token="hs-token-devices-e2e",
        sender_localpart="devicesbot",
        user_regex="@ghost_[^:]*:.*",
        **MSC4190,
    )
    options = {"app_service_config_files": f'["{registration.resolve()}"]'}
    with running_homeserver(backend, request, directory, options=options) as server:
        yield server


@pytest.fixture
async def hs(devices_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, devices_server.base_url)


async def ghost(hs: MatrixClient) -> str:
    """A user the appservice registered (without logging in: it manages devices)."""
    body = {
        "type": "m.login.application_service",
        "username": f"ghost_{next(_names)}",
        "inhibit_login": True,
    }
    user_id: str = (await hs.request("POST", "register", json=body, token=AS_TOKEN)).ok()["user_id"]
    return user_id


def device_ids(response: Response) -> dict[str, str | None]:
    return {d["device_id"]: d.get("display_name") for d in response.ok()["devices"]}


async def test_appservice_creates_updates_and_deletes_devices(hs: MatrixClient) -> None:
    user_id = await ghost(hs)
    as_user = {"user_id": user_id}
    body = {"display_name": "Bridge device"}
    created = await hs.request("PUT", "devices/GHOSTDEV", json=body, token=AS_TOKEN, params=as_user)
    assert (created.status, created.body) == (201, {})
    renamed = await hs.request(
        "PUT", "devices/GHOSTDEV", json={"display_name": "Renamed"}, token=AS_TOKEN, params=as_user
    )
    assert (renamed.status, renamed.body) == (200, {})
    unchanged = await hs.request("PUT", "devices/GHOSTDEV", json={}, token=AS_TOKEN, params=as_user)
    assert unchanged.status == 200
    listed = await hs.request("GET", "devices", token=AS_TOKEN, params=as_user)
    assert device_ids(listed) == {"GHOSTDEV": "Renamed"}

    # The appservice acts as that device from now on (identity assertion).
    whoami = await hs.request(
        "GET", "account/whoami", token=AS_TOKEN, params={**as_user, "device_id": "GHOSTDEV"}
    )
    assert (whoami.ok()["user_id"], whoami.ok()["device_id"]) == (user_id, "GHOSTDEV")

    for name in ("SECOND", "THIRD", "FOURTH"):
        made = await hs.request("PUT", f"devices/{name}", json={}, token=AS_TOKEN, params=as_user)
        assert made.status == 201
    # Deleting needs no User-Interactive Authentication.
    (await hs.request("DELETE", "devices/GHOSTDEV", json={}, token=AS_TOKEN, params=as_user)).ok()
    (
        await hs.request(
            "POST",
            "delete_devices",
            json={"devices": ["SECOND", "THIRD"]},
            token=AS_TOKEN,
            params=as_user,
        )
    ).ok()
    listed = await hs.request("GET", "devices", token=AS_TOKEN, params=as_user)
    assert device_ids(listed) == {"FOURTH": None}


async def test_appservice_bot_manages_its_own_devices(hs: MatrixClient) -> None:
    created = await hs.request("PUT", "devices/BOTDEV", json={}, token=AS_TOKEN)
    assert created.status == 201
    assert "BOTDEV" in device_ids(await hs.request("GET", "devices", token=AS_TOKEN))
    (await hs.request("DELETE", "devices/BOTDEV", token=AS_TOKEN)).ok()
    assert "BOTDEV" not in device_ids(await hs.request("GET", "devices", token=AS_TOKEN))


async def test_ordinary_users_still_need_a_device_and_uia(hs: MatrixClient) -> None:
    user = await hs.register()
    unknown = await hs.request("PUT", "devices/NOSUCHDEV", json={}, token=user)
    assert (unknown.status, unknown.body["errcode"]) == (404, "M_NOT_FOUND")
    deleting = await hs.request("DELETE", f"devices/{user.device_id}", json={}, token=user)
    assert deleting.status == 401 and "flows" in deleting.body
    deleting = await hs.request(
        "POST", "delete_devices", json={"devices": [user.device_id]}, token=user
    )
    assert deleting.status == 401 and "flows" in deleting.body
    assert user.device_id in device_ids(await hs.request("GET", "devices", token=user))
