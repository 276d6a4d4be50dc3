"""The token-issuing admin actions, on Synapse's admin API paths, against a real server on
every backend: "Login as a user" and the "Registration Tokens" API (with registration
counting the tokens' uses). Each action is in the audit log, which never holds a token."""

from __future__ import annotations

import asyncio
import hashlib
import json
import string
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from harness.client import DEFAULT_PASSWORD, Account, MatrixClient, Response, unique_localpart
from harness.server import HomeserverProcess

# The ``configured_homeserver`` fixture of tests/api/conftest.py.
ConfiguredHomeserver = Callable[..., HomeserverProcess]

SYNAPSE = "/_synapse/admin/v1"
PEYVAND = "/_peyvand/admin/v1"
TOKENS = f"{SYNAPSE}/registration_tokens"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
PASSWORD = "token admin password"
TOKEN_CHARS = set(string.ascii_letters + string.digits + "._~-")


def register_with_cli(server: HomeserverProcess, *, admin: bool) -> str:
    name = unique_localpart("tokenadmin" if admin else "plain")
    subprocess.run(
        [
            sys.executable, "-m", "peyvand", "register-user", "--config", str(server.config_path),
            "--user", name, "--password", PASSWORD, *(["--admin"] if admin else []),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return name


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


def now_ms() -> int:
    return int(time.time() * 1000)


async def audit_entries(client: MatrixClient, admin: Account) -> list[dict[str, Any]]:
    """The whole audit log, page by page."""
    entries: list[dict[str, Any]] = []
    start = 1
    while True:
        page = (
            await client.request(
                "GET",
                f"{PEYVAND}/audit_log",
                params={"from": str(start), "limit": "1000"},
                token=admin,
            )
        ).ok()
        entries.extend(page["entries"])
        if "next" not in page:
            return entries
        start = page["next"]


async def assert_audit_verifies(client: MatrixClient, admin: Account) -> None:
    verify = (await client.request("GET", f"{PEYVAND}/audit_log/verify", token=admin)).ok()
    assert verify["ok"] is True, verify


# Login as a user ------------------------------------------------------------------------


async def test_admin_logs_in_as_a_user_until_the_token_expires(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await client.login(register_with_cli(homeserver, admin=True), PASSWORD)
    alice = await client.register()
    path = f"{SYNAPSE}/users/{alice.user_id}/login"

    refused = await client.request("POST", path, json={}, token=alice)
    assert_error(refused, 403, "M_FORBIDDEN")
    assert_error(await client.request("POST", path, json={}), 401, "M_MISSING_TOKEN")

    # No body at all is allowed, as in Synapse; the token never expires by itself.
    forever = (await client.request("POST", path, token=admin)).ok()
    assert set(forever) == {"access_token"}
    whoami = (await client.request("GET", "account/whoami", token=forever["access_token"])).ok()
    assert whoami["user_id"] == alice.user_id
    # The session has no device: the user's device list does not show it.
    devices = (await client.request("GET", "devices", token=alice)).ok()["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]
    assert whoami["device_id"] != alice.device_id

    valid_until = now_ms() + 3000
    short = (
        await client.request(
            "POST", path, json={"valid_until_ms": valid_until, "reason": "ticket 42"}, token=admin
        )
    ).ok()
    # Used (and cached by the server) before it expires, refused after.
    assert (await client.request("GET", "account/whoami", token=short["access_token"])).ok()[
        "user_id"
    ] == alice.user_id
    await asyncio.sleep(max(0.0, (valid_until - now_ms()) / 1000) + 0.5)
    expired = await client.request("GET", "account/whoami", token=short["access_token"])
    assert_error(expired, 401, "M_UNKNOWN_TOKEN")
    assert expired.body["soft_logout"] is True
    past = (await client.request("POST", path, json={"valid_until_ms": 1}, token=admin)).ok()
    assert_error(
        await client.request("GET", "account/whoami", token=past["access_token"]),
        401,
        "M_UNKNOWN_TOKEN",
    )

    # Logging the session out revokes only it.
    (await client.request("POST", "logout", token=forever["access_token"])).ok()
    assert_error(
        await client.request("GET", "account/whoami", token=forever["access_token"]),
        401,
        "M_UNKNOWN_TOKEN",
    )
    assert (await client.request("GET", "account/whoami", token=alice)).ok()
    devices = (await client.request("GET", "devices", token=alice)).ok()["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]

    entries = await audit_entries(client, admin)
    issued = [e for e in entries if e["action"] == "token_issued" and e["target"] == alice.user_id]
    assert [(e["actor"], e["reason"], e["details"]["valid_until_ms"]) for e in issued] == [
        (admin.user_id, None, None),
        (admin.user_id, "ticket 42", valid_until),
        (admin.user_id, None, 1),
    ]
    assert all(e["details"]["kind"] == "access_token" for e in issued)
    assert issued[0]["details"]["device_id"] == whoami["device_id"]
    text = json.dumps(entries)
    for secret in (forever, short, past):
        assert secret["access_token"] not in text
    assert admin.access_token not in text and alice.access_token not in text
    await assert_audit_verifies(client, admin)


async def test_login_as_a_user_refuses_bad_requests(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await client.login(register_with_cli(homeserver, admin=True), PASSWORD)
    bob = await client.register()
    gone = await client.register()
    (await client.request("POST", f"{SYNAPSE}/deactivate/{gone.user_id}", token=admin)).ok()
    before = len(await audit_entries(client, admin))

    def login(user_id: str) -> str:
        return f"{SYNAPSE}/users/{user_id}/login"

    server = homeserver.server_name
    for user_id, body, status, errcode in [
        (admin.user_id, {}, 400, "M_INVALID_PARAM"),  # not as oneself (Synapse)
        ("@someone:elsewhere.example", {}, 400, "M_INVALID_PARAM"),
        ("not-a-user-id", {}, 400, "M_INVALID_PARAM"),
        (f"@nobody-{unique_localpart()}:{server}", {}, 404, "M_NOT_FOUND"),
        (gone.user_id, {}, 403, "M_USER_DEACTIVATED"),
        (bob.user_id, {"valid_until_ms": "tomorrow"}, 400, "M_BAD_JSON"),
        (bob.user_id, {"valid_until_ms": 1.5}, 400, "M_BAD_JSON"),
        (bob.user_id, {"valid_until_ms": True}, 400, "M_BAD_JSON"),
        (bob.user_id, {"valid_until_ms": 2**63}, 400, "M_INVALID_PARAM"),
        (bob.user_id, {"valid_until_ms": -1}, 400, "M_INVALID_PARAM"),
        (bob.user_id, {"reason": 7}, 400, "M_BAD_JSON"),
    ]:
        answer = await client.request("POST", login(user_id), json=body, token=admin)
        assert_error(answer, status, errcode)
    not_json = await client.request("POST", login(bob.user_id), json=[1], token=admin)
    assert_error(not_json, 400, "M_NOT_JSON")
    # Nothing was issued, so nothing was recorded.
    assert len(await audit_entries(client, admin)) == before


# Registration tokens -----------------------------------------------------------------


async def register_with_token(
    client: MatrixClient, token: str, username: str | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {
        "username": username or unique_localpart(),
        "password": DEFAULT_PASSWORD,
        **extra,
    }
    first = await client.request("POST", "register", json=body)
    assert first.status == 401, first.body
    auth = {"type": "m.login.registration_token", "token": token, "session": first.body["session"]}
    return await client.request("POST", "register", json={**body, "auth": auth})


async def valid(client: MatrixClient, token: str) -> bool:
    answer = (await client.request("GET", VALIDITY, params={"token": token})).ok()
    result: bool = answer["valid"]
    return result


def target(token: str) -> str:
    return "registration_token:sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


async def test_registration_token_lifecycle(
    configured_homeserver: ConfiguredHomeserver,
) -> None:
    server = configured_homeserver(open_registration=False)
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        # No tokens yet: registration is off.
        assert_error(
            await client.request("GET", VALIDITY, params={"token": "x"}), 403, "M_FORBIDDEN"
        )
        admin = await client.login(register_with_cli(server, admin=True), PASSWORD)
        plain = await client.login(register_with_cli(server, admin=False), PASSWORD)

        for method, path in [
            ("GET", TOKENS),
            ("POST", f"{TOKENS}/new"),
            ("GET", f"{TOKENS}/abc"),
            ("PUT", f"{TOKENS}/abc"),
            ("DELETE", f"{TOKENS}/abc"),
        ]:
            assert_error(
                await client.request(method, path, json={}, token=plain), 403, "M_FORBIDDEN"
            )

        created = (
            await client.request(
                "POST", f"{TOKENS}/new", json={"token": "Alpha-1", "uses_allowed": 1}, token=admin
            )
        ).ok()
        assert created == {
            "token": "Alpha-1",
            "uses_allowed": 1,
            "pending": 0,
            "completed": 0,
            "expiry_time": None,
        }
        first = await client.request("POST", "register", json={"username": "x", "password": "y"})
        assert first.body["flows"] == [{"stages": ["m.login.registration_token"]}]
        assert await valid(client, "Alpha-1") and not await valid(client, "alpha-1")

        # A registration that fails after the token stage gives its use back.
        no_password = await register_with_token(client, "Alpha-1", password=None)
        assert_error(no_password, 400, "M_MISSING_PARAM")
        token_path = f"{TOKENS}/Alpha-1"
        assert (await client.request("GET", token_path, token=admin)).ok()["pending"] == 0
        wrong = await register_with_token(client, "Alpha-2")
        assert_error(wrong, 401, "M_UNAUTHORIZED")

        bob = (await register_with_token(client, "Alpha-1")).ok()
        assert "access_token" in bob
        used = (await client.request("GET", token_path, token=admin)).ok()
        assert (used["pending"], used["completed"]) == (0, 1)
        assert not await valid(client, "Alpha-1")
        assert_error(await register_with_token(client, "Alpha-1"), 401, "M_UNAUTHORIZED")

        # More uses make it valid again; an empty update changes nothing.
        updated = (
            await client.request("PUT", token_path, json={"uses_allowed": 2}, token=admin)
        ).ok()
        assert (updated["uses_allowed"], updated["completed"]) == (2, 1)
        assert (await client.request("PUT", token_path, json={}, token=admin)).ok() == updated
        assert await valid(client, "Alpha-1")
        (await register_with_token(client, "Alpha-1")).ok()
        assert (await client.request("GET", token_path, token=admin)).ok()["completed"] == 2

        # Expiry: valid until expiry_time, refused after.
        expiry = now_ms() + 2000
        soon = (
            await client.request("POST", f"{TOKENS}/new", json={"expiry_time": expiry}, token=admin)
        ).ok()
        assert len(soon["token"]) == 16 and set(soon["token"]) <= TOKEN_CHARS
        assert soon["expiry_time"] == expiry and soon["uses_allowed"] is None
        assert await valid(client, soon["token"])
        await asyncio.sleep(max(0.0, (expiry - now_ms()) / 1000) + 0.5)
        assert not await valid(client, soon["token"])
        assert_error(await register_with_token(client, soon["token"]), 401, "M_UNAUTHORIZED")
        past = await client.request(
            "PUT", f"{TOKENS}/{soon['token']}", json={"expiry_time": 5}, token=admin
        )
        assert_error(past, 400, "M_INVALID_PARAM")
        revived = (
            await client.request(
                "PUT", f"{TOKENS}/{soon['token']}", json={"expiry_time": None}, token=admin
            )
        ).ok()
        assert revived["expiry_time"] is None and await valid(client, soon["token"])

        long = (
            await client.request("POST", f"{TOKENS}/new", json={"length": 64}, token=admin)
        ).ok()
        assert len(long["token"]) == 64
        none_allowed = (
            await client.request(
                "POST", f"{TOKENS}/new", json={"token": "zero.~_", "uses_allowed": 0}, token=admin
            )
        ).ok()
        assert not await valid(client, none_allowed["token"])

        # Listing, with the valid filter.
        def names(answer: Response) -> list[str]:
            return [t["token"] for t in answer.ok()["registration_tokens"]]

        everything = names(await client.request("GET", TOKENS, token=admin))
        assert everything == ["Alpha-1", soon["token"], long["token"], "zero.~_"]
        (await client.request("PUT", token_path, json={"uses_allowed": 2}, token=admin)).ok()
        valid_ones = names(
            await client.request("GET", TOKENS, params={"valid": "true"}, token=admin)
        )
        assert valid_ones == [soon["token"], long["token"]]
        invalid = names(await client.request("GET", TOKENS, params={"valid": "false"}, token=admin))
        assert invalid == ["Alpha-1", "zero.~_"]
        bad_filter = await client.request("GET", TOKENS, params={"valid": "maybe"}, token=admin)
        assert_error(bad_filter, 400, "M_INVALID_PARAM")

        # Delete: gone, and no longer accepted.
        assert (await client.request("DELETE", f"{TOKENS}/{long['token']}", token=admin)).ok() == {}
        for method in ("GET", "DELETE", "PUT"):
            missing = await client.request(
                method, f"{TOKENS}/{long['token']}", json={}, token=admin
            )
            assert_error(missing, 404, "M_NOT_FOUND")
        assert not await valid(client, long["token"])

        entries = await audit_entries(client, admin)
        mine = [e for e in entries if e["action"].startswith("token_")]
        assert [(e["action"], e["target"]) for e in mine] == [
            ("token_issued", target("Alpha-1")),
            ("token_updated", target("Alpha-1")),
            ("token_issued", target(soon["token"])),
            ("token_updated", target(soon["token"])),
            ("token_issued", target(long["token"])),
            ("token_issued", target("zero.~_")),
            ("token_updated", target("Alpha-1")),
            ("token_deleted", target(long["token"])),
        ]
        assert all(e["actor"] == admin.user_id for e in mine)
        assert mine[0]["details"] == {
            "kind": "registration_token",
            "generated": False,
            "length": 7,
            "uses_allowed": 1,
            "expiry_time": None,
        }
        assert mine[1]["details"]["changed"] == ["uses_allowed"]
        assert mine[2]["details"]["generated"] is True
        text = json.dumps(entries)
        for secret in ("Alpha-1", soon["token"], long["token"], "zero.~_"):
            assert secret not in text
        assert admin.access_token not in text and plain.access_token not in text
        await assert_audit_verifies(client, admin)


async def test_registration_tokens_refuse_bad_input(
    configured_homeserver: ConfiguredHomeserver,
) -> None:
    server = configured_homeserver(open_registration=False, tokens=("sesame",))
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        admin = await client.login(register_with_cli(server, admin=True), PASSWORD)
        new = f"{TOKENS}/new"
        (await client.request("POST", new, json={"token": "taken"}, token=admin)).ok()
        for body in [
            {"token": ""},
            {"token": "x" * 65},
            {"token": "has space"},
            {"token": "sl/ash"},
            {"token": 5},
            {"token": "taken"},  # exists
            {"token": "sesame"},  # a configured token
            {"length": 0},
            {"length": 65},
            {"length": "16"},
            {"length": 2.5},
            {"uses_allowed": -1},
            {"uses_allowed": "3"},
            {"uses_allowed": 1.5},
            {"uses_allowed": True},
            {"uses_allowed": 2**63},
            {"expiry_time": 1},
            {"expiry_time": 2**63},
            {"expiry_time": "never"},
        ]:
            answer = await client.request("POST", new, json=body, token=admin)
            assert_error(answer, 400, "M_INVALID_PARAM")
        assert_error(await client.request("POST", new, json=[], token=admin), 400, "M_NOT_JSON")
        for body in [
            {"uses_allowed": -2},
            {"uses_allowed": "x"},
            {"expiry_time": 3},
            {"uses_allowed": 2**63},
            {"expiry_time": 2**63},
        ]:
            answer = await client.request("PUT", f"{TOKENS}/taken", json=body, token=admin)
            assert_error(answer, 400, "M_INVALID_PARAM")
        listed = (await client.request("GET", TOKENS, token=admin)).ok()["registration_tokens"]
        assert [t["token"] for t in listed] == ["taken"]  # configured tokens are not listed

        # Configured tokens still work, unlimited, beside database ones.
        assert await valid(client, "sesame") and await valid(client, "taken")
        (await register_with_token(client, "sesame")).ok()
        (await register_with_token(client, "taken")).ok()
        taken = (await client.request("GET", f"{TOKENS}/taken", token=admin)).ok()
        assert (taken["pending"], taken["completed"]) == (0, 1)
        bad_stage = await register_with_token(client, 12)  # type: ignore[arg-type]
        assert_error(bad_stage, 401, "M_INVALID_PARAM")


async def test_concurrent_registrations_never_exceed_uses_allowed(
    configured_homeserver: ConfiguredHomeserver,
) -> None:
    server = configured_homeserver(open_registration=False)
    async with aiohttp.ClientSession() as session:
        client = MatrixClient(session, server.base_url)
        admin = await client.login(register_with_cli(server, admin=True), PASSWORD)
        (
            await client.request(
                "POST", f"{TOKENS}/new", json={"token": "few", "uses_allowed": 2}, token=admin
            )
        ).ok()
        answers = await asyncio.gather(*(register_with_token(client, "few") for _ in range(8)))
        statuses = sorted(a.status for a in answers)
        assert statuses == [200, 200] + [401] * 6, [a.body for a in answers]
        few = (await client.request("GET", f"{TOKENS}/few", token=admin)).ok()
        assert (few["pending"], few["completed"], few["uses_allowed"]) == (0, 2, 2)
