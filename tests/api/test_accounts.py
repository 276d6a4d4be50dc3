"""Accounts, login, devices and discovery over HTTP against a real Peyvand (every backend).

Client-Server API sections "Client Authentication", "Account registration and
management", "Device Management", "Server Discovery" and "Capabilities negotiation".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from harness.client import DEFAULT_PASSWORD, Account, MatrixClient, Response, unique_localpart
from harness.server import HomeserverProcess

# The ``configured_homeserver`` fixture of tests/api/conftest.py.
ConfiguredHomeserver = Callable[..., HomeserverProcess]

V1 = "/_matrix/client/v1"


def password_auth(account: Account, password: str | None = None, **extra: Any) -> dict[str, Any]:
    """An ``m.login.password`` UIA stage for ``account``."""
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.user_id},
        "password": password if password is not None else account.password,
        **extra,
    }


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def login_body(
    client: MatrixClient, user: str, password: str = DEFAULT_PASSWORD, **extra: Any
) -> Response:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        **extra,
    }
    return await client.request("POST", "login", json=body)


# Registration -------------------------------------------------------------------------


async def test_register_runs_uia_with_dummy_then_whoami(client: MatrixClient) -> None:
    localpart = unique_localpart()
    body: dict[str, Any] = {"username": localpart, "password": DEFAULT_PASSWORD}
    first = await client.request("POST", "register", json=body)
    assert first.status == 401
    assert {"stages": ["m.login.dummy"]} in first.body["flows"]
    assert "errcode" not in first.body
    body["auth"] = {"type": "m.login.dummy", "session": first.body["session"]}
    body["initial_device_display_name"] = "Test phone"
    result = (await client.request("POST", "register", json=body)).ok()
    assert result["user_id"] == f"@{localpart}:localhost"
    account = Account(result["user_id"], result["access_token"], result["device_id"], "")
    whoami = (await client.request("GET", "account/whoami", token=account)).ok()
    assert whoami == {"user_id": account.user_id, "device_id": account.device_id, "is_guest": False}
    device = (await client.request("GET", f"devices/{account.device_id}", token=account)).ok()
    assert device["display_name"] == "Test phone"


async def test_register_lowercases_username_and_honours_device_id(client: MatrixClient) -> None:
    localpart = unique_localpart("MixedCase")
    body = {"username": localpart, "password": DEFAULT_PASSWORD, "device_id": "MYDEVICE"}
    first = await client.request("POST", "register", json=body)
    auth = {"type": "m.login.dummy", "session": first.body["session"]}
    result = (await client.request("POST", "register", json={**body, "auth": auth})).ok()
    assert result["user_id"] == f"@{localpart.lower()}:localhost"
    assert result["device_id"] == "MYDEVICE"


async def test_register_inhibit_login_returns_no_token(client: MatrixClient) -> None:
    body = {"username": unique_localpart(), "password": "pw", "inhibit_login": True}
    first = await client.request("POST", "register", json=body)
    auth = {"type": "m.login.dummy", "session": first.body["session"]}
    result = (await client.request("POST", "register", json={**body, "auth": auth})).ok()
    assert "access_token" not in result and "device_id" not in result
    assert (await login_body(client, result["user_id"], "pw")).status == 200


async def test_register_without_password_is_missing_param(client: MatrixClient) -> None:
    auth = {"type": "m.login.dummy"}
    response = await client.request(
        "POST", "register", json={"username": unique_localpart(), "auth": auth}
    )
    assert_error(response, 400, "M_MISSING_PARAM")


async def test_username_taken(client: MatrixClient) -> None:
    account = await client.register()
    localpart = account.user_id[1:].split(":")[0]
    taken = await client.request("GET", "register/available", params={"username": localpart})
    assert_error(taken, 400, "M_USER_IN_USE")
    again = await client.request("POST", "register", json={"username": localpart, "password": "x"})
    assert_error(again, 400, "M_USER_IN_USE")
    free = await client.request(
        "GET", "register/available", params={"username": unique_localpart()}
    )
    assert free.ok() == {"available": True}


async def test_invalid_usernames(client: MatrixClient) -> None:
    for username in ("has space", "é", "_reserved", "12345", "x" * 250):
        available = await client.request("GET", "register/available", params={"username": username})
        assert_error(available, 400, "M_INVALID_USERNAME")
        registered = await client.request(
            "POST", "register", json={"username": username, "password": "x"}
        )
        assert_error(registered, 400, "M_INVALID_USERNAME")


async def test_guest_registration_is_forbidden(client: MatrixClient) -> None:
    response = await client.request("POST", "register", json={}, params={"kind": "guest"})
    assert_error(response, 403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_closed_registration_without_tokens(
    configured_homeserver: ConfiguredHomeserver,
) -> None:
    server = configured_homeserver(open_registration=False)
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        response = await client.request(
            "POST", "register", json={"username": "alice", "password": "x"}
        )
        assert_error(response, 403, "M_FORBIDDEN")
        available = await client.request("GET", "register/available", params={"username": "a"})
        assert_error(available, 403, "M_FORBIDDEN")
        validity = await client.request(
            "GET",
            f"{V1}/register/m.login.registration_token/validity",
            params={"token": "x"},
        )
        assert_error(validity, 403, "M_FORBIDDEN")


async def test_registration_with_token(configured_homeserver: ConfiguredHomeserver) -> None:
    server = configured_homeserver(open_registration=False, tokens=("sesame",))
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        validity = f"{V1}/register/m.login.registration_token/validity"
        good = await client.request("GET", validity, params={"token": "sesame"})
        assert good.ok() == {"valid": True}
        bad = await client.request("GET", validity, params={"token": "nope"})
        assert bad.ok() == {"valid": False}

        body: dict[str, Any] = {"username": "alice", "password": DEFAULT_PASSWORD}
        first = await client.request("POST", "register", json=body)
        assert first.status == 401
        assert first.body["flows"] == [{"stages": ["m.login.registration_token"]}]
        session_id = first.body["session"]
        dummy = await client.request(
            "POST", "register", json={**body, "auth": {"type": "m.login.dummy"}}
        )
        assert_error(dummy, 400, "M_UNRECOGNIZED")
        wrong = await client.request(
            "POST",
            "register",
            json={
                **body,
                "auth": {
                    "type": "m.login.registration_token",
                    "token": "nope",
                    "session": session_id,
                },
            },
        )
        assert_error(wrong, 401, "M_UNAUTHORIZED")
        assert wrong.body["session"] == session_id and wrong.body["flows"]
        auth = {"type": "m.login.registration_token", "token": "sesame", "session": session_id}
        result = (await client.request("POST", "register", json={**body, "auth": auth})).ok()
        assert result["user_id"] == "@alice:localhost"


async def test_open_registration_also_offers_tokens(
    configured_homeserver: ConfiguredHomeserver,
) -> None:
    server = configured_homeserver(open_registration=True, tokens=("sesame",))
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        first = await client.request("POST", "register", json={})
        assert first.status == 401
        stages = [flow["stages"] for flow in first.body["flows"]]
        assert stages == [["m.login.dummy"], ["m.login.registration_token"]]


# Login and logout ---------------------------------------------------------------------


async def test_login_flows(client: MatrixClient) -> None:
    flows = (await client.request("GET", "login")).ok()["flows"]
    assert {"type": "m.login.password"} in flows


async def test_login_by_localpart_full_id_and_deprecated_user(client: MatrixClient) -> None:
    account = await client.register()
    localpart = account.user_id[1:].split(":")[0]
    by_localpart = await client.login(localpart)
    assert by_localpart.user_id == account.user_id
    assert by_localpart.device_id != account.device_id
    by_full_id = await client.login(account.user_id)
    assert by_full_id.user_id == account.user_id
    legacy = await client.request(
        "POST",
        "login",
        json={"type": "m.login.password", "user": localpart, "password": DEFAULT_PASSWORD},
    )
    assert legacy.ok()["user_id"] == account.user_id
    assert legacy.body["home_server"] == "localhost"


async def test_login_reusing_device_id_revokes_its_old_token(client: MatrixClient) -> None:
    account = await client.register()
    first = (await login_body(client, account.user_id, device_id="SAMEDEVICE")).ok()
    second = (await login_body(client, account.user_id, device_id="SAMEDEVICE")).ok()
    assert first["device_id"] == second["device_id"] == "SAMEDEVICE"
    old = await client.request("GET", "account/whoami", token=first["access_token"])
    assert_error(old, 401, "M_UNKNOWN_TOKEN")
    new = await client.request("GET", "account/whoami", token=second["access_token"])
    assert new.ok()["device_id"] == "SAMEDEVICE"


async def test_login_failures(client: MatrixClient) -> None:
    account = await client.register()
    wrong_password = await login_body(client, account.user_id, "wrong")
    assert_error(wrong_password, 403, "M_FORBIDDEN")
    unknown_user = await login_body(client, unique_localpart("nobody"))
    assert_error(unknown_user, 403, "M_FORBIDDEN")
    other_server = await login_body(client, "@someone:elsewhere.example")
    assert_error(other_server, 403, "M_FORBIDDEN")
    unknown_type = await client.request("POST", "login", json={"type": "m.login.magic"})
    assert_error(unknown_type, 400, "M_UNKNOWN")


async def test_logout_invalidates_token_and_deletes_device(client: MatrixClient) -> None:
    account = await client.register()
    other = await client.login(account.user_id)
    assert (await client.request("GET", "account/whoami", token=other)).status == 200
    (await client.request("POST", "logout", token=other)).ok()
    gone = await client.request("GET", "account/whoami", token=other)
    assert_error(gone, 401, "M_UNKNOWN_TOKEN")
    devices = (await client.request("GET", "devices", token=account)).ok()["devices"]
    assert [d["device_id"] for d in devices] == [account.device_id]


async def test_logout_all(client: MatrixClient) -> None:
    account = await client.register()
    other = await client.login(account.user_id)
    (await client.request("POST", "logout/all", token=account)).ok()
    for token in (account, other):
        response = await client.request("GET", "account/whoami", token=token)
        assert_error(response, 401, "M_UNKNOWN_TOKEN")
    again = await client.login(account.user_id)
    devices = (await client.request("GET", "devices", token=again)).ok()["devices"]
    assert [d["device_id"] for d in devices] == [again.device_id]


async def test_missing_and_unknown_tokens(client: MatrixClient) -> None:
    assert_error(await client.request("GET", "account/whoami"), 401, "M_MISSING_TOKEN")
    unknown = await client.request("GET", "account/whoami", token="not-a-token")
    assert_error(unknown, 401, "M_UNKNOWN_TOKEN")
    account = await client.register()
    by_query = await client.request(
        "GET", "account/whoami", params={"access_token": account.access_token}
    )
    assert by_query.ok()["user_id"] == account.user_id


# Devices ------------------------------------------------------------------------------


async def test_devices_list_get_rename(client: MatrixClient) -> None:
    account = await client.register()
    other = await client.login(account.user_id)
    devices = (await client.request("GET", "devices", token=account)).ok()["devices"]
    assert sorted(d["device_id"] for d in devices) == sorted([account.device_id, other.device_id])
    assert all(isinstance(d["last_seen_ts"], int) for d in devices)
    path = f"devices/{other.device_id}"
    (await client.request("PUT", path, json={"display_name": "Laptop"}, token=account)).ok()
    device = (await client.request("GET", path, token=account)).ok()
    assert device == {**device, "device_id": other.device_id, "display_name": "Laptop"}
    # Without display_name the name is unchanged ("If this is not given, the display name
    # is unchanged").
    (await client.request("PUT", path, json={}, token=account)).ok()
    assert (await client.request("GET", path, token=account)).ok()["display_name"] == "Laptop"
    assert_error(await client.request("GET", "devices/NOPE", token=account), 404, "M_NOT_FOUND")
    rename_missing = await client.request("PUT", "devices/NOPE", json={}, token=account)
    assert_error(rename_missing, 404, "M_NOT_FOUND")
    # Another user's device is not visible.
    stranger = await client.register()
    hidden = await client.request("GET", path, token=stranger)
    assert_error(hidden, 404, "M_NOT_FOUND")


async def test_delete_device_requires_uia(client: MatrixClient) -> None:
    account = await client.register()
    other = await client.login(account.user_id)
    path = f"devices/{other.device_id}"
    first = await client.request("DELETE", path, json={}, token=account)
    assert first.status == 401
    assert first.body["flows"] == [{"stages": ["m.login.password"]}]
    session_id = first.body["session"]
    wrong = await client.request(
        "DELETE",
        path,
        json={"auth": password_auth(account, "wrong", session=session_id)},
        token=account,
    )
    assert_error(wrong, 401, "M_FORBIDDEN")
    assert wrong.body["session"] == session_id
    assert (await client.request("GET", "account/whoami", token=other)).status == 200
    done = await client.request(
        "DELETE", path, json={"auth": password_auth(account, session=session_id)}, token=account
    )
    done.ok()
    gone = await client.request("GET", "account/whoami", token=other)
    assert_error(gone, 401, "M_UNKNOWN_TOKEN")
    assert_error(await client.request("GET", path, token=account), 404, "M_NOT_FOUND")


async def test_uia_session_cannot_authorise_another_operation(client: MatrixClient) -> None:
    account = await client.register()
    first = await client.request("DELETE", "devices/ONE", json={}, token=account)
    auth = password_auth(account, session=first.body["session"])
    other_op = await client.request("DELETE", "devices/TWO", json={"auth": auth}, token=account)
    assert_error(other_op, 403, "M_FORBIDDEN")


async def test_uia_password_of_another_user_is_refused(client: MatrixClient) -> None:
    account = await client.register()
    other = await client.login(account.user_id)
    stranger = await client.register()
    response = await client.request(
        "DELETE",
        f"devices/{other.device_id}",
        json={"auth": password_auth(stranger)},
        token=account,
    )
    assert_error(response, 401, "M_FORBIDDEN")


async def test_delete_devices_in_bulk(client: MatrixClient) -> None:
    account = await client.register()
    others = [await client.login(account.user_id) for _ in range(3)]
    body = {"devices": [o.device_id for o in others] + ["UNKNOWN"]}
    first = await client.request("POST", "delete_devices", json=body, token=account)
    assert first.status == 401
    auth = password_auth(account, session=first.body["session"])
    (
        await client.request("POST", "delete_devices", json={**body, "auth": auth}, token=account)
    ).ok()
    devices = (await client.request("GET", "devices", token=account)).ok()["devices"]
    assert [d["device_id"] for d in devices] == [account.device_id]
    for other in others:
        response = await client.request("GET", "account/whoami", token=other)
        assert_error(response, 401, "M_UNKNOWN_TOKEN")


# Account management -------------------------------------------------------------------


async def test_password_change_logs_out_other_devices(client: MatrixClient) -> None:
    account = await client.register()
    other = await client.login(account.user_id)
    body: dict[str, Any] = {"new_password": "new secret"}
    first = await client.request("POST", "account/password", json=body, token=account)
    assert first.status == 401
    body["auth"] = password_auth(account, session=first.body["session"])
    (await client.request("POST", "account/password", json=body, token=account)).ok()
    assert (await client.request("GET", "account/whoami", token=account)).status == 200
    gone = await client.request("GET", "account/whoami", token=other)
    assert_error(gone, 401, "M_UNKNOWN_TOKEN")
    assert_error(await login_body(client, account.user_id), 403, "M_FORBIDDEN")
    assert (await login_body(client, account.user_id, "new secret")).status == 200


async def test_password_change_can_keep_other_devices(client: MatrixClient) -> None:
    account = await client.register()
    other = await client.login(account.user_id)
    body = {
        "new_password": "another secret",
        "logout_devices": False,
        "auth": password_auth(account),
    }
    (await client.request("POST", "account/password", json=body, token=account)).ok()
    assert (await client.request("GET", "account/whoami", token=other)).status == 200


async def test_deactivate_then_login_fails(client: MatrixClient) -> None:
    account = await client.register()
    first = await client.request("POST", "account/deactivate", json={}, token=account)
    assert first.status == 401
    auth = password_auth(account, session=first.body["session"])
    result = await client.request("POST", "account/deactivate", json={"auth": auth}, token=account)
    assert result.ok() == {"id_server_unbind_result": "no-support"}
    gone = await client.request("GET", "account/whoami", token=account)
    assert_error(gone, 401, "M_UNKNOWN_TOKEN")
    assert_error(await login_body(client, account.user_id), 403, "M_FORBIDDEN")
    localpart = account.user_id[1:].split(":")[0]
    taken = await client.request("GET", "register/available", params={"username": localpart})
    assert_error(taken, 400, "M_USER_IN_USE")


async def test_threepids(client: MatrixClient) -> None:
    account = await client.register()
    assert (await client.request("GET", "account/3pid", token=account)).ok() == {"threepids": []}
    add = await client.request("POST", "account/3pid/add", json={}, token=account)
    assert_error(add, 400, "M_MISSING_PARAM")
    # Without [email] the server cannot validate an address (as Synapse).
    body = {"client_secret": "secret", "email": "a@example.org", "send_attempt": 1}
    token = await client.request(
        "POST", "account/3pid/email/requestToken", json=body, token=account
    )
    assert_error(token, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
    delete = await client.request(
        "POST",
        "account/3pid/delete",
        json={"medium": "email", "address": "a@example.org"},
        token=account,
    )
    assert_error(delete, 400, "M_THREEPID_NOT_FOUND")


# Discovery ----------------------------------------------------------------------------


async def test_versions_well_known_and_capabilities(client: MatrixClient) -> None:
    versions = (await client.request("GET", "/_matrix/client/versions")).ok()
    assert {"v1.1", "v1.12"} <= set(versions["versions"])
    assert versions["unstable_features"] == {"org.matrix.simplified_msc3575": True}
    well_known = (await client.request("GET", "/.well-known/matrix/client")).ok()
    assert well_known["m.homeserver"]["base_url"].startswith("http")
    account = await client.register()
    capabilities = (await client.request("GET", "capabilities", token=account)).ok()
    caps = capabilities["capabilities"]
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.room_versions"] == {
        "default": "12",
        "available": {str(version): "stable" for version in range(1, 13)},
    }
    assert caps["m.3pid_changes"] == {"enabled": False}
    legacy = await client.request("GET", "/_matrix/client/r0/account/whoami", token=account)
    assert legacy.ok()["user_id"] == account.user_id


# Request errors -----------------------------------------------------------------------


async def test_malformed_and_mistyped_bodies(client: MatrixClient) -> None:
    url = f"{client.base_url}/_matrix/client/v3/login"
    async with aiohttp.ClientSession() as session:
        for raw in (b"{not json", b"[1, 2]"):
            async with session.post(url, data=raw) as response:
                assert response.status == 400
                assert (await response.json())["errcode"] == "M_NOT_JSON"
    mistyped = await client.request(
        "POST", "login", json={"type": "m.login.password", "user": "a", "password": 123}
    )
    assert_error(mistyped, 400, "M_BAD_JSON")
    bad_identifier = await client.request(
        "POST", "login", json={"type": "m.login.password", "identifier": "alice", "password": "x"}
    )
    assert_error(bad_identifier, 400, "M_BAD_JSON")
    missing = await client.request("POST", "login", json={"password": "x"})
    assert_error(missing, 400, "M_MISSING_PARAM")


async def test_unknown_endpoint(client: MatrixClient) -> None:
    unknown = await client.request("GET", "no/such/endpoint")
    assert_error(unknown, 404, "M_UNRECOGNIZED")


async def test_wrong_method(client: MatrixClient) -> None:
    wrong_method = await client.request("GET", "logout")
    assert_error(wrong_method, 405, "M_UNRECOGNIZED")


async def test_login_rate_limit(configured_homeserver: ConfiguredHomeserver) -> None:
    server = configured_homeserver(open_registration=True, login_burst=3)
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        for _ in range(3):
            assert_error(await login_body(client, "nobody"), 403, "M_FORBIDDEN")
        limited = await login_body(client, "nobody")
        assert_error(limited, 429, "M_LIMIT_EXCEEDED")
        assert isinstance(limited.body["retry_after_ms"], int)
        assert limited.body["retry_after_ms"] > 0


async def test_versions_ignores_a_stale_token(client: MatrixClient) -> None:
    response = await client.request("GET", "/_matrix/client/versions", token="stale")
    assert "v1.12" in response.ok()["versions"]
