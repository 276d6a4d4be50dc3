"""Typing and presence across a deployment's processes (issue 21, "Streams across
processes"): behind nginx, a typing notification PUT on the event writer wakes a
long-polling /sync on the client reader within a second, a /sync with
``set_presence=online`` on the reader makes its user online in both processes, and a
presence set on the writer (``PUT /presence``) reaches a sync on the reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.deployment import WRITER_ROLES, Deployment, behind_nginx
from harness.nginx import Nginx

PASSWORD = "a long password"


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Deployment, Nginx]]:
    roles = {"writer": WRITER_ROLES, "reader": ["client_reader"]}
    with behind_nginx(request, tmp_path, roles) as (nginx, deployment):
        yield deployment, nginx


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.token = ""

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        base: str | None = None,
        **params: str,
    ) -> tuple[dict[str, Any], str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, f"{base or self.base}/_matrix/client/v3{path}", json=body, params=params,
            headers=headers, timeout=aiohttp.ClientTimeout(total=30),
        ) as response:  # fmt: skip
            answer = await response.json()
            assert response.status == 200, (method, path, response.status, answer)
            return answer, response.headers["X-Peyvand-Worker"]

    async def register(self, name: str) -> str:
        body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        answer, _ = await self.call("POST", "/register", body)
        self.token = answer["access_token"]
        return str(answer["user_id"])


class Poller:
    """A client's long-polls on the reader, from the token of its last answer."""

    def __init__(self, client: Client, since: str) -> None:
        self.client = client
        self.since = since

    async def woken_by(
        self, write: Awaitable[Any], holds: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The long-poll waiting when ``write`` is made returns what ``holds`` looks for
        within 1 s (a poll woken by something else first is polled again, a bounded
        number of times)."""
        for _ in range(5):
            poll = asyncio.ensure_future(self._poll())
            await asyncio.sleep(0.3)
            if not poll.done():
                break
            await poll
        started = time.monotonic()
        await write
        for _ in range(5):
            answer = await poll
            if holds(answer):
                waited = time.monotonic() - started
                assert waited < 1.0, f"woken {waited:.2f} s after the write: not by the bus"
                return answer
            poll = asyncio.ensure_future(self._poll())
        raise AssertionError("the write never reached the reader's sync")

    async def _poll(self) -> dict[str, Any]:
        answer, worker = await self.client.call(
            "GET", "/sync", since=self.since, timeout="20000", set_presence="offline"
        )
        assert worker == "reader"
        self.since = answer["next_batch"]
        return answer


async def _room_of_two(alice: Client, bob: Client) -> tuple[str, str, str]:
    """A room alice made and bob joined; bob's first sync on the reader, which has it."""
    bob_id = await bob.register("bob")
    (created, _) = await alice.call("POST", "/createRoom", {"invite": [bob_id]})
    room_id = str(created["room_id"])
    await bob.call("POST", f"/rooms/{room_id}/join", {})
    for _ in range(50):  # bounded: 5 s
        sync, worker = await bob.call("GET", "/sync", set_presence="offline")
        if room_id in sync["rooms"]["join"]:
            break
        await asyncio.sleep(0.1)
    assert worker == "reader"
    assert room_id in sync["rooms"]["join"]
    return room_id, bob_id, str(sync["next_batch"])


def _typing(answer: dict[str, Any], room_id: str) -> list[str] | None:
    room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
    for event in room.get("ephemeral", {}).get("events", []):
        if event["type"] == "m.typing":
            return list(event["content"]["user_ids"])
    return None


def _presence(answer: dict[str, Any], user_id: str) -> dict[str, Any] | None:
    for event in answer.get("presence", {}).get("events", []):
        if event["sender"] == user_id:
            return dict(event["content"])
    return None


async def test_typing_on_the_writer_wakes_a_sync_on_the_reader(
    deployment: tuple[Deployment, Nginx],
) -> None:
    _, nginx = deployment
    async with aiohttp.ClientSession() as session:
        alice, bob = Client(session, nginx.base_url), Client(session, nginx.base_url)
        alice_id = await alice.register("alice")
        room_id, _, since = await _room_of_two(alice, bob)
        polls = Poller(bob, since)

        async def typing(on: bool) -> None:
            _, worker = await alice.call(
                "PUT", f"/rooms/{room_id}/typing/{alice_id}", {"typing": on, "timeout": 30000}
            )
            assert worker == "writer"

        await polls.woken_by(typing(True), lambda answer: _typing(answer, room_id) == [alice_id])
        await polls.woken_by(typing(False), lambda answer: _typing(answer, room_id) == [])


async def test_presence_set_on_either_process_is_seen_on_both(
    deployment: tuple[Deployment, Nginx],
) -> None:
    processes, nginx = deployment
    async with aiohttp.ClientSession() as session:
        alice, bob = Client(session, nginx.base_url), Client(session, nginx.base_url)
        await alice.register("alice")
        _, bob_id, _ = await _room_of_two(alice, bob)
        sync, worker = await alice.call("GET", "/sync", set_presence="offline")
        assert worker == "reader"
        polls = Poller(alice, sync["next_batch"])

        # bob syncs online on the reader: alice's sync there hears it...
        async def bob_syncs() -> None:
            _, worker = await bob.call("GET", "/sync", set_presence="online")
            assert worker == "reader"

        await polls.woken_by(
            bob_syncs(),
            lambda answer: (_presence(answer, bob_id) or {}).get("presence") == "online",
        )
        # ...and both processes answer alice's presence view of bob with it (the writer
        # through nginx, the reader asked directly).
        for base, name in ((nginx.base_url, "writer"), (processes["reader"].base_url, "reader")):
            for _ in range(10):  # bounded: 1 s
                status, worker = await alice.call("GET", f"/presence/{bob_id}/status", base=base)
                if status["presence"] == "online":
                    break
                await asyncio.sleep(0.1)
            assert worker == name
            assert status["presence"] == "online", name
            assert status["currently_active"] is True

        # bob's presence set on the writer reaches alice's sync on the reader.
        async def bob_sets() -> None:
            _, worker = await bob.call(
                "PUT",
                f"/presence/{bob_id}/status",
                {"presence": "unavailable", "status_msg": "tea"},
            )
            assert worker == "writer"

        answer = await polls.woken_by(
            bob_sets(),
            lambda answer: (_presence(answer, bob_id) or {}).get("presence") == "unavailable",
        )
        assert (_presence(answer, bob_id) or {}).get("status_msg") == "tea"
        status, worker = await alice.call(
            "GET", f"/presence/{bob_id}/status", base=processes["reader"].base_url
        )
        assert worker == "reader"
        assert (status["presence"], status["status_msg"]) == ("unavailable", "tea")
