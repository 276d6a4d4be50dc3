"""Event creation forwarded to the event writer (issue 21, "Forwarding"): a process
without the ``event_writer`` role that is asked to create an event (a write sent to it
directly, or a background job whose lease it holds) has the writer create it over the
internal API, and its caller then reads the event there at once (read-your-writes); the
writer's Matrix errors come back unchanged; the internal API wants the deployment's
secret and is closed behind nginx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.deployment import Deployment, behind_nginx
from harness.nginx import Nginx

PASSWORD = "a long password"
SEND = "/_peyvand/internal/v1/events/send"
TIMEOUT = aiohttp.ClientTimeout(total=30)
# The guest removal job's deadline: it is leased on the reader, which may take it a few
# seconds after starting.
JOB_SECONDS = 30.0


class Proxied:
    def __init__(self, deployment: Deployment, nginx: Nginx, secret: str) -> None:
        self.deployment = deployment
        self.nginx = nginx
        self.secret = secret
        self.writer = deployment["writer"].base_url
        self.reader = deployment["reader"].base_url


@pytest.fixture
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proxied]:
    # Every background job is the reader's: the writer has no ``background`` role.
    roles = {
        "writer": ["event_writer", "federation_inbound", "federation_sender", "media"],
        "reader": ["client_reader", "background"],
    }
    options = {"registration.allow_guest_access": "true"}
    with behind_nginx(request, tmp_path, roles, options=options) as (nginx, deployment):
        secret = (tmp_path / "workers.secret").read_text(encoding="utf-8")
        yield Proxied(deployment, nginx, secret)


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    **params: str,
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(
        method, url, json=body, params=params, headers=headers, timeout=TIMEOUT
    ) as response:
        return response.status, await response.json(), response.headers.get("X-Peyvand-Worker")


async def _register(session: aiohttp.ClientSession, base: str, name: str) -> tuple[str, str]:
    body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    status, answer, _ = await _call(
        session, "POST", f"{base}/_matrix/client/v3/register", None, body
    )
    assert status == 200, answer
    return str(answer["user_id"]), str(answer["access_token"])


def _client(base: str, path: str) -> str:
    return f"{base}/_matrix/client/v3{path}"


async def test_writes_sent_to_a_reader_are_made_by_the_writer(proxied: Proxied) -> None:
    async with aiohttp.ClientSession() as session:
        _, token = await _register(session, proxied.nginx.base_url, "alice")
        status, created, worker = await _call(
            session, "POST", _client(proxied.reader, "/createRoom"), token, {"name": "Here"}
        )
        assert (status, worker) == (200, "reader"), created
        room_id = created["room_id"]
        # Read-your-writes: the reader announced the room before answering.
        status, name, _ = await _call(
            session, "GET", _client(proxied.reader, f"/rooms/{room_id}/state/m.room.name/"), token
        )
        assert (status, name) == (200, {"name": "Here"})

        send = _client(proxied.reader, f"/rooms/{room_id}/send/m.room.message/t1")
        message = {"msgtype": "m.text", "body": "hi"}
        status, sent, worker = await _call(session, "PUT", send, token, message)
        assert (status, worker) == (200, "reader"), sent
        event_id = sent["event_id"]
        status, messages, _ = await _call(
            session, "GET", _client(proxied.reader, f"/rooms/{room_id}/messages"), token,
            dir="b", limit="1",
        )  # fmt: skip
        assert status == 200
        assert [e["event_id"] for e in messages["chunk"]] == [event_id]
        status, stored, _ = await _call(
            session, "GET", _client(proxied.writer, f"/rooms/{room_id}/event/{event_id}"), token
        )
        assert (status, stored["content"]) == (200, message)
        # The transaction ID is the writer's to deduplicate: a retry gets the same event.
        status, again, _ = await _call(session, "PUT", send, token, message)
        assert (status, again) == (200, {"event_id": event_id})


async def test_the_writers_errors_come_back_unchanged(proxied: Proxied) -> None:
    async with aiohttp.ClientSession() as session:
        _, alice = await _register(session, proxied.nginx.base_url, "alice")
        _, bob = await _register(session, proxied.nginx.base_url, "bob")
        status, created, _ = await _call(
            session, "POST", _client(proxied.nginx.base_url, "/createRoom"), alice, {}
        )
        assert status == 200
        path = f"/rooms/{created['room_id']}/send/m.room.message/"
        message = {"msgtype": "m.text", "body": "not a member"}
        from_writer = await _call(session, "PUT", _client(proxied.writer, path + "w"), bob, message)
        from_reader = await _call(session, "PUT", _client(proxied.reader, path + "r"), bob, message)
        assert from_writer[:2] == from_reader[:2]
        assert from_reader[0] == 403
        assert from_reader[1]["errcode"] == "M_FORBIDDEN"
        assert from_reader[2] == "reader"


async def test_the_internal_api_wants_the_secret(proxied: Proxied) -> None:
    body = {"room_id": "!nowhere:localhost", "sender": "@a:localhost", "event": {}}
    async with aiohttp.ClientSession() as session:
        for base in (proxied.reader, proxied.writer):
            for token in (None, "wrong", proxied.secret + "x"):
                status, answer, _ = await _call(session, "POST", base + SEND, token, body)
                assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), (base, token)
            # With the secret, the request gets as far as its body (an event without type).
            status, answer, _ = await _call(session, "POST", base + SEND, proxied.secret, body)
            assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
        async with session.post(
            proxied.nginx.base_url + SEND,
            json=body,
            headers={"Authorization": f"Bearer {proxied.secret}"},
            timeout=TIMEOUT,
        ) as response:
            assert response.status == 404
            assert "X-Peyvand-Worker" not in response.headers


async def test_a_background_job_on_a_reader_creates_events(proxied: Proxied) -> None:
    """Guest removal (leased on the reader, the only process with the ``background``
    role) makes a guest leave a room whose guest access is turned off."""
    base = proxied.nginx.base_url
    async with aiohttp.ClientSession() as session:
        _, alice = await _register(session, base, "alice")
        status, guest, _ = await _call(
            session, "POST", _client(base, "/register"), None, {}, kind="guest"
        )
        assert status == 200, guest
        guest_access = {
            "type": "m.room.guest_access",
            "state_key": "",
            "content": {"guest_access": "can_join"},
        }
        status, created, _ = await _call(
            session, "POST", _client(base, "/createRoom"), alice,
            {"preset": "public_chat", "initial_state": [guest_access]},
        )  # fmt: skip
        assert status == 200, created
        room_id = created["room_id"]
        status, joined, _ = await _call(
            session, "POST", _client(base, f"/rooms/{room_id}/join"), guest["access_token"], {}
        )
        assert status == 200, joined
        status, _, _ = await _call(
            session, "PUT", _client(base, f"/rooms/{room_id}/state/m.room.guest_access/"), alice,
            {"guest_access": "forbidden"},
        )  # fmt: skip
        assert status == 200
        member = _client(proxied.writer, f"/rooms/{room_id}/state/m.room.member/{guest['user_id']}")
        deadline = time.monotonic() + JOB_SECONDS
        membership = "join"
        while membership == "join" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status, content, _ = await _call(session, "GET", member, alice)
            assert status == 200, content
            membership = content["membership"]
        assert membership == "leave"
