"""Routing of a deployment (issue 21, "Routing"): a real nginx configured by
``peyvand deployment nginx`` sends each request to a process of its role: reads to the
client reader, writes and the admin API to the event writer, media and federation
to their process; internal paths never get through."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from harness.deployment import Deployment, behind_nginx
from harness.nginx import Nginx


@pytest.fixture
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Nginx, Deployment]]:
    roles = {
        "writer": ["event_writer", "federation_inbound", "federation_sender"],
        "reader": ["client_reader"],
        "edge": ["media", "background"],
    }
    with behind_nginx(request, tmp_path, roles) as deployed:
        yield deployed


async def _served_by(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: object
) -> tuple[int, str | None]:
    async with session.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status, response.headers.get("X-Peyvand-Worker")


async def test_each_path_reaches_its_role(proxied: tuple[Nginx, Deployment]) -> None:
    nginx, deployment = proxied
    base = nginx.base_url
    async with aiohttp.ClientSession() as session:
        assert await _served_by(session, "GET", f"{base}/_matrix/client/versions") == (
            200,
            "reader",
        )
        status, worker = await _served_by(
            session,
            "POST",
            f"{base}/_matrix/client/v3/register",
            json={
                "username": "alice",
                "password": "a long password",
                "auth": {"type": "m.login.dummy"},
            },
        )
        assert (status, worker) == (200, "writer")
        async with session.post(
            f"{base}/_matrix/client/v3/login",
            json={"type": "m.login.password", "user": "alice", "password": "a long password"},
        ) as response:
            assert response.headers["X-Peyvand-Worker"] == "writer"
            token = (await response.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert await _served_by(
            session, "GET", f"{base}/_matrix/client/v3/account/whoami", headers=auth
        ) == (200, "reader")
        assert await _served_by(
            session, "GET", f"{base}/_matrix/client/r0/account/whoami?access_token={token}"
        ) == (200, "reader")
        assert await _served_by(
            session, "POST", f"{base}/_matrix/client/v3/createRoom", json={}, headers=auth
        ) == (200, "writer")
        assert await _served_by(
            session, "POST", f"{base}/_matrix/client/v3/keys/query",
            json={"device_keys": {}}, headers=auth,
        ) == (200, "reader")  # fmt: skip
        assert await _served_by(
            session, "GET", f"{base}/_matrix/client/v1/media/config", headers=auth
        ) == (200, "edge")
        assert await _served_by(
            session, "GET", f"{base}/_peyvand/admin/v1/audit_log", headers=auth
        ) == (403, "writer")
        assert await _served_by(session, "GET", f"{base}/_matrix/federation/v1/version") == (
            200,
            "writer",
        )
        assert await _served_by(session, "GET", f"{base}/_peyvand/internal/v1/anything") == (
            404,
            None,
        )

        # A write sent to a reader directly (not through nginx) is forwarded to the event
        # writer, which alone numbers events (tests/workers/test_forwarded_writes.py).
        async with session.post(
            f"{base}/_matrix/client/v3/createRoom", json={}, headers=auth
        ) as response:
            room_id = (await response.json())["room_id"]
        reader = deployment["reader"].base_url
        async with session.put(
            f"{reader}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
            json={"msgtype": "m.text", "body": "hi"},
            headers=auth,
        ) as response:
            assert response.status == 200
            assert response.headers["X-Peyvand-Worker"] == "reader"
            assert (await response.json())["event_id"].startswith("$")
