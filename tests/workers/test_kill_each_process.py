"""Issue 21's acceptance, its second point: "kill -9 of each process in turn while 16
clients send: no acknowledged message is lost, the dead process's rooms and jobs are
taken over within 10 s, clients continue through nginx after retries; restarting it
rejoins the deployment".

Four processes behind nginx on PostgreSQL (the acceptance layout; no other server to
federate with here): two event writers sharing the rooms (the first the primary one), a
client reader, and one for federation, media and background jobs, whose leases the
second writer contends for too. Sixteen clients send to four rooms (two per writer) through nginx,
each retrying a failed send with the same transaction ID, while every process in turn
is killed and started again. Each client's sends never stop for more than
``TAKEOVER_SECONDS``; a background job lease a killed process held is someone else's
within that time; a member syncing through nginx then sees every acknowledged message
once, in each sender's order; media uploaded and downloaded through nginx while each is
down; a client's account data writes (the primary writer's) never stop for more than
``TAKEOVER_SECONDS`` either."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from harness.deployment import Deployment, behind_nginx
from harness.nginx import Nginx
from workers.test_several_writers_deployment import (
    TIMEOUT,
    _call,
    _client,
    _message_chain,
    _register,
    _rooms_of_each_writer,
)

ROLES = {
    "writer": ["event_writer"],
    "writer2": ["event_writer", "background"],
    "reader": ["client_reader"],
    "fed": ["federation_inbound", "federation_sender", "media", "background"],
}
KILLED_IN_TURN = ("writer2", "reader", "fed", "writer")
CLIENTS = 16
TAKEOVER_SECONDS = 10.0
# Each process stays down this long before it is started again (longer than the
# takeover's bound: a send that waited for the restart would show), then runs this long
# before the next is killed.
DOWN_SECONDS = TAKEOVER_SECONDS + 2.0
UP_SECONDS = 4.0
# Between one client's sends: 16 clients at up to 4 messages a second each.
PAUSE_SECONDS = 0.25
COUNTER = "org.example.counter"
# Pages of /messages read at most per room.
MAX_PAGES = 50
MESSAGES = json.dumps({"types": ["m.room.message"]})
# Retries of one send at most (a send retried all along the test: something is wrong).
MAX_TRIES = 400


@pytest.fixture
def four_processes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Nginx, Deployment]]:
    with behind_nginx(request, tmp_path, ROLES) as deployed:
        yield deployed


class Sender:
    """One client sending numbered messages to one room through nginx."""

    def __init__(self, index: int, token: str, room_id: str) -> None:
        self.index, self.token, self.room_id = index, token, room_id
        self.acknowledged = 0
        self.longest_gap = 0.0

    async def run(self, session: aiohttp.ClientSession, base: str, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            await self._send(session, base, self.acknowledged)
            self.acknowledged += 1
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            await asyncio.sleep(PAUSE_SECONDS)

    def request(self, number: int) -> tuple[str, dict[str, Any]]:
        """The path and body of write ``number`` (the same transaction each time)."""
        path = f"/rooms/{self.room_id}/send/m.room.message/m{number}"
        return path, {"msgtype": "m.text", "body": f"{self.index}:{number}"}

    async def _send(self, session: aiohttp.ClientSession, base: str, number: int) -> None:
        """Write ``number`` until acknowledged."""
        path, body = self.request(number)
        for _ in range(MAX_TRIES):
            try:
                async with session.put(
                    _client(base, path),
                    json=body,
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=TIMEOUT,
                ) as response:
                    if response.status == 200:
                        return
                    assert response.status in (502, 503), await response.text()
            except aiohttp.ClientConnectionError:
                pass  # nginx's connection to a process closed by its death
            await asyncio.sleep(0.2)
        raise AssertionError(f"write {number} of client {self.index} never acknowledged")


class AccountDataWriter(Sender):
    """One client moving a counter in its account data through nginx: a write of the
    primary event writer's (``wiring.primary``), whichever writer that is."""

    def __init__(self, token: str, user_id: str) -> None:
        super().__init__(-1, token, "")
        self.user_id = user_id

    def request(self, number: int) -> tuple[str, dict[str, Any]]:
        return f"/user/{self.user_id}/account_data/{COUNTER}", {"n": number}


async def _leases(database_url: str | None) -> dict[str, str]:
    """Each background job's unexpired lease: its holder."""
    assert database_url is not None
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT name, holder FROM leases WHERE expires_ts > $1", int(time.time() * 1000)
        )
    finally:
        await conn.close()
    return {str(row["name"]): str(row["holder"]) for row in rows}


async def _taken_over(database_url: str | None, dead: str, held: dict[str, str]) -> None:
    """Every lease ``dead`` held (``held``: the leases before its death) is held by
    another process within ``TAKEOVER_SECONDS``."""
    mine = {name for name, holder in held.items() if holder == dead}
    async with asyncio.timeout(TAKEOVER_SECONDS):
        while True:
            now = await _leases(database_url)
            if all(now.get(name) not in (None, dead) for name in mine):
                return
            await asyncio.sleep(0.2)


async def _media_round_trip(
    session: aiohttp.ClientSession, base: str, token: str, content: bytes
) -> None:
    """Upload ``content`` and download it back through nginx, each retried until it
    succeeds, within ``TAKEOVER_SECONDS`` in all."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    async with asyncio.timeout(TAKEOVER_SECONDS):
        while True:
            async with session.post(
                f"{base}/_matrix/media/v3/upload", data=content, headers=headers, timeout=TIMEOUT
            ) as response:
                if response.status == 200:
                    uri = (await response.json())["content_uri"]
                    break
                assert response.status in (502, 503), response.status
            await asyncio.sleep(0.2)
        path = uri.removeprefix("mxc://")
        while True:
            async with session.get(
                f"{base}/_matrix/client/v1/media/download/{path}", headers=headers, timeout=TIMEOUT
            ) as response:
                if response.status == 200:
                    assert await response.read() == content
                    return
                assert response.status in (502, 503), response.status
            await asyncio.sleep(0.2)


async def _messages(
    session: aiohttp.ClientSession, base: str, token: str, room_id: str
) -> list[str]:
    """The room's message bodies, oldest first, paginated back through ``/messages``."""
    bodies: list[str] = []
    start = ""
    for _ in range(MAX_PAGES):
        query = f"?dir=b&limit=1000&filter={quote(MESSAGES)}" + (f"&from={start}" if start else "")
        status, page, _ = await _call(
            session, "GET", _client(base, f"/rooms/{room_id}/messages{query}"), token
        )
        assert status == 200, page
        bodies += [e["content"]["body"] for e in page["chunk"]]
        if "end" not in page:
            return bodies[::-1]
        start = page["end"]
    raise AssertionError(f"{room_id} has more than {MAX_PAGES} pages")


async def test_killing_each_process_in_turn_loses_no_acknowledged_message(
    four_processes: tuple[Nginx, Deployment],
) -> None:
    nginx, deployment = four_processes
    base = nginx.base_url
    async with aiohttp.ClientSession() as session:
        owner = await _register(session, base, "owner")
        rooms = [
            room
            for _ in range(2)
            for room in (await _rooms_of_each_writer(session, base, owner)).values()
        ]
        watcher = await _register(session, base, "watcher")
        senders = []
        for index in range(CLIENTS):
            token = await _register(session, base, f"sender{index}")
            senders.append(Sender(index, token, rooms[index % len(rooms)]))
        for token, room_id in [(s.token, s.room_id) for s in senders] + [
            (watcher, room) for room in rooms
        ]:
            status, joined, _ = await _call(
                session, "POST", _client(base, f"/join/{room_id}"), token, {}
            )
            assert status == 200, joined
        held = await _leases(deployment.database_url)
        assert set(held.values()) <= {"writer2", "fed"}, held

        counter = AccountDataWriter(watcher, "@watcher:localhost")
        stop = asyncio.Event()
        sending = [
            asyncio.create_task(client.run(session, base, stop)) for client in [*senders, counter]
        ]
        try:
            for name in KILLED_IN_TURN:
                await asyncio.sleep(UP_SECONDS)
                held = await _leases(deployment.database_url)
                await asyncio.to_thread(deployment[name].kill)
                await _taken_over(deployment.database_url, name, held)
                # Media too, whichever process held the role.
                await _media_round_trip(session, base, watcher, f"while {name} is down".encode())
                await asyncio.sleep(DOWN_SECONDS)
                await asyncio.to_thread(deployment[name].start)
            await asyncio.sleep(UP_SECONDS)
        finally:
            stop.set()
            await asyncio.gather(*sending)

        seen = {room: await _messages(session, base, watcher, room) for room in rooms}
        status, stored, _ = await _call(
            session, "GET", _client(base, f"/user/@watcher:localhost/account_data/{COUNTER}"),
            watcher,
        )  # fmt: skip
    assert (status, stored) == (200, {"n": counter.acknowledged - 1})
    assert counter.longest_gap <= TAKEOVER_SECONDS, counter.longest_gap
    for room in rooms:
        # One chain of prev_events in each room across every change of writer.
        assert await _message_chain(deployment.database_url, room) == seen[room]
    for sender in senders:
        mine = [b for b in seen[sender.room_id] if b.split(":")[0] == str(sender.index)]
        assert mine == [f"{sender.index}:{n}" for n in range(sender.acknowledged)]
        assert sender.longest_gap <= TAKEOVER_SECONDS, (sender.index, sender.longest_gap)
    assert min(s.acknowledged for s in senders) > 0
