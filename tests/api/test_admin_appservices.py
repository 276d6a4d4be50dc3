"""The admin view of application services' transactions, over HTTP on every backend:
GET /_peyvand/admin/v1/appservices[/{id}] shows each appservice's state, queue and
failures; POST .../{id}/retry makes a backing-off one try now, and is audited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from harness.admin import login_admin
from harness.appservice import RecordingAppService, write_registration
from harness.client import Account, MatrixClient, new_session
from harness.server import SERVER_NAME, HomeserverProcess, start_homeserver

ADMIN = "/_peyvand/admin/v1"
AS_TOKEN = "as-delta"
BOT = f"@deltabot:{SERVER_NAME}"
WAIT = 20.0


@dataclass
class World:
    server: HomeserverProcess
    appservice: RecordingAppService


@pytest.fixture(scope="module")
async def world(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """A server with the appservice ``delta`` (listening) and ``quiet`` (no ``url``)."""
    appservice = RecordingAppService("hs-delta")
    await appservice.start()
    data_dir = tmp_path_factory.mktemp("admin-appservices")
    delta = write_registration(
        data_dir / "delta.yaml",
        appservice_id="delta",
        url=appservice.url,
        as_token=AS_TOKEN,
        hs_token=appservice.hs_token,
        sender_localpart="deltabot",
        user_regex=f"@delta_.*:{SERVER_NAME}",
    )
    quiet = write_registration(
        data_dir / "quiet.yaml",
        appservice_id="quiet",
        url=None,
        as_token="as-quiet",
        hs_token="hs-quiet",
        sender_localpart="quietbot",
        user_regex=f"@quiet_.*:{SERVER_NAME}",
    )
    options = {"app_service_config_files": f'["{delta}", "{quiet}"]'}
    server = await asyncio.to_thread(
        start_homeserver, backend, request, data_dir / "server", options=options
    )
    try:
        yield World(server, appservice)
    finally:
        await asyncio.to_thread(server.stop)
        await appservice.stop()


@pytest.fixture
async def client(world: World) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, world.server.base_url)


async def status(client: MatrixClient, admin: Account, appservice_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (
        await client.request("GET", f"{ADMIN}/appservices/{appservice_id}", token=admin)
    ).ok()
    return found


async def wait_for_status(
    client: MatrixClient, admin: Account, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll delta's status (every 0.1 s, bounded) until ``check`` holds."""
    deadline = time.monotonic() + WAIT
    while True:
        current = await status(client, admin, "delta")
        if check(current):
            return current
        assert time.monotonic() < deadline, f"status never matched: {current}"
        await asyncio.sleep(0.1)


async def test_only_admins_see_appservices(world: World, client: MatrixClient) -> None:
    alice = await client.register()
    for method, path in (
        ("GET", f"{ADMIN}/appservices"),
        ("GET", f"{ADMIN}/appservices/delta"),
        ("POST", f"{ADMIN}/appservices/delta/retry"),
    ):
        denied = await client.request(method, path, json={} if method == "POST" else None)
        assert denied.status == 401, denied.body
        forbidden = await client.request(
            method, path, json={} if method == "POST" else None, token=alice
        )
        assert (forbidden.status, forbidden.body["errcode"]) == (403, "M_FORBIDDEN")


async def test_listing_and_unknown_ids(world: World, client: MatrixClient) -> None:
    admin = await login_admin(client, world.server)
    listed = (await client.request("GET", f"{ADMIN}/appservices", token=admin)).ok()
    by_id = {a["id"]: a for a in listed["appservices"]}
    assert sorted(by_id) == ["delta", "quiet"]
    assert by_id["delta"]["url"] == world.appservice.url
    assert by_id["quiet"]["state"] == "no_url" and by_id["quiet"]["url"] is None
    for path in ("appservices/nope", "appservices/nope/retry"):
        method = "POST" if path.endswith("retry") else "GET"
        missing = await client.request(method, f"{ADMIN}/{path}", json={}, token=admin)
        assert (missing.status, missing.body["errcode"]) == (404, "M_NOT_FOUND")


async def test_failures_queue_and_an_audited_retry(world: World, client: MatrixClient) -> None:
    admin = await login_admin(client, world.server)
    alice = await client.register()
    room_id: str = (await client.request("POST", "createRoom", {}, alice)).ok()["room_id"]
    world.appservice.fail_with = 503
    try:
        path = f"rooms/{quote(room_id)}"
        (await client.request("POST", f"{path}/invite", {"user_id": BOT}, alice)).ok()
        (await client.request("POST", f"{path}/join", {}, AS_TOKEN)).ok()
        for i in range(3):
            message = {"msgtype": "m.text", "body": f"while down {i}"}
            (await client.request("PUT", f"{path}/send/m.room.message/d{i}", message, alice)).ok()
        failing = await wait_for_status(
            client, admin, lambda s: s["consecutive_failures"] >= 2 and s["queue_length"] >= 5
        )
        assert failing["state"] == "backing_off"
        assert "503" in failing["last_error"]
        assert failing["next_retry_ts"] is not None
        world.appservice.fail_with = None
        retried = (
            await client.request(
                "POST", f"{ADMIN}/appservices/delta/retry", {"reason": "bridge fixed"}, admin
            )
        ).ok()
    finally:
        world.appservice.fail_with = None
    # Sent at once, not after the backoff (which had grown to at least 2 s).
    assert retried["retried"] is True
    recovered = await wait_for_status(
        client, admin, lambda s: s["state"] == "up" and s["queue_length"] == 0
    )
    assert recovered["consecutive_failures"] == 0 and recovered["last_error"] is None
    assert recovered["last_success_ts"] is not None and recovered["last_txn_id"] is not None
    bodies = [e["content"].get("body") for e in world.appservice.events]
    assert [b for b in bodies if b and b.startswith("while down")] == [
        f"while down {i}" for i in range(3)
    ]
    # Nothing to retry now.
    again = await client.request("POST", f"{ADMIN}/appservices/delta/retry", {}, admin)
    assert again.ok()["retried"] is False
    log = (
        await client.request("GET", f"{ADMIN}/audit_log", params={"limit": "1000"}, token=admin)
    ).ok()["entries"]
    retries = [e for e in log if e["action"] == "appservice_retry"]
    assert [(e["actor"], e["target"], e["reason"]) for e in retries[-2:]] == [
        (admin.user_id, "appservice:delta", "bridge fixed"),
        (admin.user_id, "appservice:delta", None),
    ]
