"""Two event writers sharing the rooms (issue 21, several event writers), a client reader
and nginx: each room's events are created by its writer (``RoomOwners``); nginx sends a
room's sends straight there and every other write to the first writer, which hands a
room's event to its writer; whatever process a write reaches, the event is stored once
and every client sees every room's messages once, in order, through any process."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from harness.deployment import WRITER_ROLES, Deployment, behind_nginx
from harness.nginx import Nginx
from peyvand.services.timeline.room_owners import RoomOwners

PASSWORD = "a long password"
TIMEOUT = aiohttp.ClientTimeout(total=30)
WRITERS = ("writer", "writer2")
OWNERS = RoomOwners(WRITERS)
ROLES = {"writer": WRITER_ROLES, "writer2": ["event_writer"], "reader": ["client_reader"]}
SENDERS = 8
SENDS_EACH = 12
SYNC_SECONDS = 30.0
# Issue 21: "the dead process's rooms ... are taken over within 10 s".
TAKEOVER_SECONDS = 10.0
UNLIMITED = json.dumps({"room": {"timeline": {"limit": 1000}}})


@pytest.fixture
def two_writers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Nginx, Deployment]]:
    with behind_nginx(request, tmp_path, ROLES) as deployed:
        yield deployed


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str | None, body: Any = None
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(
        method, url, json=body, headers=headers, timeout=TIMEOUT
    ) as response:
        return response.status, await response.json(), response.headers.get("X-Peyvand-Worker")


def _client(base: str, path: str) -> str:
    return f"{base}/_matrix/client/v3{path}"


async def _register(session: aiohttp.ClientSession, base: str, name: str) -> str:
    body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    status, answer, _ = await _call(session, "POST", _client(base, "/register"), None, body)
    assert status == 200, answer
    return str(answer["access_token"])


async def _rooms_of_each_writer(
    session: aiohttp.ClientSession, base: str, token: str
) -> dict[str, str]:
    """A public room of each writer (rooms are created until both have one)."""
    found: dict[str, str] = {}
    for _ in range(40):
        status, created, _ = await _call(
            session, "POST", _client(base, "/createRoom"), token, {"preset": "public_chat"}
        )
        assert status == 200, created
        found.setdefault(OWNERS.owner(created["room_id"]), created["room_id"])
        if len(found) == len(WRITERS):
            return found
    raise AssertionError("40 rooms, all of one writer")


async def _timeline(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    rooms: set[str],
    expected: int,
    since: str | None = None,
) -> dict[str, list[str]]:
    """Each room's message bodies as /sync at ``base`` gives them after ``since``,
    incrementally and never limited, until ``expected`` messages have come (at most
    ``SYNC_SECONDS``)."""
    bodies: dict[str, list[str]] = {room: [] for room in rooms}
    async with asyncio.timeout(SYNC_SECONDS):
        while sum(map(len, bodies.values())) < expected:
            query = f"?timeout=2000&filter={quote(UNLIMITED)}"
            if since is not None:
                query += f"&since={since}"
            status, answer, _ = await _call(session, "GET", _client(base, f"/sync{query}"), token)
            assert status == 200, answer
            since = answer["next_batch"]
            for room_id, room in answer.get("rooms", {}).get("join", {}).items():
                assert not room["timeline"].get("limited"), room_id
                for event in room["timeline"]["events"]:
                    if room_id in rooms and event["type"] == "m.room.message":
                        bodies[room_id].append(event["content"]["body"])
    return bodies


async def _since(session: aiohttp.ClientSession, base: str, token: str, rooms: set[str]) -> str:
    """A sync token at ``base`` once it shows every room of ``rooms`` joined (a client
    reader shows a write once it has followed it)."""
    async with asyncio.timeout(SYNC_SECONDS):
        while True:
            url = _client(base, f"/sync?timeout=0&filter={quote(UNLIMITED)}")
            status, answer, _ = await _call(session, "GET", url, token)
            assert status == 200, answer
            if rooms <= set(answer.get("rooms", {}).get("join", {})):
                return str(answer["next_batch"])
            await asyncio.sleep(0.1)


async def test_each_room_is_written_by_its_writer_whichever_process_is_asked(
    two_writers: tuple[Nginx, Deployment],
) -> None:
    nginx, deployment = two_writers
    async with aiohttp.ClientSession() as session:
        token = await _register(session, nginx.base_url, "alice")
        rooms = await _rooms_of_each_writer(session, nginx.base_url, token)
        for owner, room_id in rooms.items():
            # Through nginx: straight to the room's writer.
            status, sent, worker = await _call(
                session,
                "PUT",
                _client(nginx.base_url, f"/rooms/{room_id}/send/m.room.message/n-{owner}"),
                token,
                {"msgtype": "m.text", "body": "via nginx"},
            )
            assert (status, worker) == (200, owner), sent
            # To each process directly: the others hand it to the room's writer.
            for asked in (*WRITERS, "reader"):
                url = _client(
                    deployment[asked].base_url,
                    f"/rooms/{room_id}/send/m.room.message/d-{asked}",
                )
                status, direct, worker = await _call(
                    session, "PUT", url, token, {"msgtype": "m.text", "body": f"to {asked}"}
                )
                assert (status, worker) == (200, asked), direct
                # The transaction is the room writer's: a retry anywhere gets the event.
                status, again, _ = await _call(session, "PUT", url, token, {"body": "again"})
                assert (status, again) == (200, direct)
            # Every other write reaches the first writer, which forwards the event.
            status, named, worker = await _call(
                session,
                "PUT",
                _client(nginx.base_url, f"/rooms/{room_id}/state/m.room.topic/"),
                token,
                {"topic": owner},
            )
            assert (status, worker) == (200, "writer"), named
        expected = ["via nginx", "to writer", "to writer2", "to reader"]
        for base in (nginx.base_url, deployment["reader"].base_url):
            seen = await _timeline(session, base, token, set(rooms.values()), 8)
            assert seen == {room_id: expected for room_id in rooms.values()}


async def test_concurrent_senders_in_rooms_of_both_writers_lose_and_reorder_nothing(
    two_writers: tuple[Nginx, Deployment],
) -> None:
    """Eight senders in four rooms (two per writer) send at once through nginx; a member
    syncing through nginx sees each sender's messages once, in the order they were
    acknowledged, and each room's order is its writer's stream order."""
    nginx, _ = two_writers
    async with aiohttp.ClientSession() as session:
        owner = await _register(session, nginx.base_url, "owner")
        rooms = [
            room
            for _ in range(2)
            for room in (await _rooms_of_each_writer(session, nginx.base_url, owner)).values()
        ]
        senders = [await _register(session, nginx.base_url, f"s{i}") for i in range(SENDERS)]
        targets = dict(zip(senders, itertools.cycle(rooms), strict=False))
        for token, room_id in targets.items():
            status, joined, _ = await _call(
                session, "POST", _client(nginx.base_url, f"/join/{room_id}"), token, {}
            )
            assert status == 200, joined
        watcher = await _register(session, nginx.base_url, "watcher")
        for room_id in rooms:
            status, joined, _ = await _call(
                session, "POST", _client(nginx.base_url, f"/join/{room_id}"), watcher, {}
            )
            assert status == 200, joined

        async def send_all(index: int, token: str) -> None:
            room_id = targets[token]
            for n in range(SENDS_EACH):
                status, sent, _ = await _call(
                    session,
                    "PUT",
                    _client(nginx.base_url, f"/rooms/{room_id}/send/m.room.message/c{n}"),
                    token,
                    {"msgtype": "m.text", "body": f"{index}:{n}"},
                )
                assert status == 200, sent

        since = await _since(session, nginx.base_url, watcher, set(rooms))
        await asyncio.gather(*(send_all(i, token) for i, token in enumerate(senders)))
        total = SENDERS * SENDS_EACH
        seen = await _timeline(session, nginx.base_url, watcher, set(rooms), total, since)
    for index, token in enumerate(senders):
        mine = [b for b in seen[targets[token]] if b.split(":")[0] == str(index)]
        assert mine == [f"{index}:{n}" for n in range(SENDS_EACH)]


async def _holder(database_url: str | None, owner: str) -> str:
    """Which writer creates ``owner``'s rooms' events now, as stored."""
    assert database_url is not None
    conn = await asyncpg.connect(database_url)
    try:
        holder = await conn.fetchval("SELECT holder FROM room_writers WHERE owner = $1", owner)
    finally:
        await conn.close()
    return str(holder or owner)


async def _message_chain(database_url: str | None, room_id: str) -> list[str]:
    """The room's message bodies in stream order, each message's ``prev_events`` (as
    stored) checked to be exactly the message before it: no fork across a change of
    writer (one built on a stale view of the room would cite an older event)."""
    assert database_url is not None
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id, pdu FROM events WHERE room_id = $1 AND type = 'm.room.message'"
            " ORDER BY stream_ordering",
            room_id,
        )
    finally:
        await conn.close()
    pdus = [json.loads(row["pdu"]) for row in rows]
    for before, after, pdu in zip(rows, rows[1:], pdus[1:], strict=False):
        assert pdu["prev_events"] == [before["event_id"]], (after["event_id"], pdu)
    return [pdu["content"]["body"] for pdu in pdus]


async def test_a_killed_writers_rooms_are_taken_over_then_handed_back(
    two_writers: tuple[Nginx, Deployment],
) -> None:
    """kill -9 of the second writer: the first stands in for its position, so its own
    rooms' messages still reach a member syncing through the reader, and takes its rooms
    over: a send to one through nginx (the other writers are the backups of a room's
    writer) succeeds again within ``TAKEOVER_SECONDS``. Started again, the killed writer
    gets its rooms back; nothing acknowledged is lost or reordered."""
    nginx, deployment = two_writers
    async with aiohttp.ClientSession() as session:
        token = await _register(session, nginx.base_url, "alice")
        rooms = await _rooms_of_each_writer(session, nginx.base_url, token)
        reader = deployment["reader"].base_url
        since = await _since(session, reader, token, set(rooms.values()))

        async def send(room_id: str, body: str) -> tuple[int, str | None]:
            """The status of a send through nginx (502: nginx's own page, not JSON), and
            the process that answered."""
            async with session.put(
                _client(nginx.base_url, f"/rooms/{room_id}/send/m.room.message/{body}"),
                json={"msgtype": "m.text", "body": body},
                headers={"Authorization": f"Bearer {token}"},
                timeout=TIMEOUT,
            ) as response:
                return response.status, response.headers.get("X-Peyvand-Worker")

        async def send_until_stored(room_id: str, body: str) -> str | None:
            """Send (the same transaction) until acknowledged, within the takeover time."""
            async with asyncio.timeout(TAKEOVER_SECONDS):
                while True:
                    status, worker = await send(room_id, body)
                    if status == 200:
                        return worker
                    assert status in (502, 503), status
                    await asyncio.sleep(0.2)

        assert await send(rooms["writer2"], "before") == (200, "writer2")
        await asyncio.to_thread(deployment["writer2"].kill)
        killed = time.monotonic()
        assert await send(rooms["writer"], "while-away") == (200, "writer")
        assert await send_until_stored(rooms["writer2"], "taken-over") == "writer"
        taken = time.monotonic() - killed
        assert await _holder(deployment.database_url, "writer2") == "writer"
        assert await send(rooms["writer2"], "taken-over-2") == (200, "writer")
        seen = await _timeline(session, reader, token, set(rooms.values()), 4, since)
        assert seen == {
            rooms["writer"]: ["while-away"],
            rooms["writer2"]: ["before", "taken-over", "taken-over-2"],
        }, f"taken over after {taken:.1f} s"

        await asyncio.to_thread(deployment["writer2"].start)
        async with asyncio.timeout(TAKEOVER_SECONDS):
            while True:
                if await _holder(deployment.database_url, "writer2") == "writer2":
                    break
                await asyncio.sleep(0.2)
        # nginx may still send it to the first writer (a failed server rests a few
        # seconds), which hands it to the room's writer.
        assert await send_until_stored(rooms["writer2"], "back") in WRITERS
        assert await send(rooms["writer"], "after") == (200, "writer")
        seen = await _timeline(session, reader, token, set(rooms.values()), 6, since)
        assert seen == {
            rooms["writer"]: ["while-away", "after"],
            rooms["writer2"]: ["before", "taken-over", "taken-over-2", "back"],
        }
        chain = await _message_chain(deployment.database_url, rooms["writer2"])
        assert chain == seen[rooms["writer2"]]


async def test_a_killed_readers_reads_are_answered_by_a_writer(
    two_writers: tuple[Nginx, Deployment],
) -> None:
    """kill -9 of the lone client reader: nginx sends the reads to the event writers (its
    backups), which answer any user; started again, the reader takes them back."""
    nginx, deployment = two_writers
    async with aiohttp.ClientSession() as session:
        token = await _register(session, nginx.base_url, "alice")
        rooms = await _rooms_of_each_writer(session, nginx.base_url, token)
        sync = _client(nginx.base_url, f"/sync?timeout=0&filter={quote(UNLIMITED)}")
        status, _, worker = await _call(session, "GET", sync, token)
        assert (status, worker) == (200, "reader")
        await asyncio.to_thread(deployment["reader"].kill)
        for room_id in rooms.values():
            status, _, _ = await _call(
                session,
                "PUT",
                _client(nginx.base_url, f"/rooms/{room_id}/send/m.room.message/r"),
                token,
                {"msgtype": "m.text", "body": "reader away"},
            )
            assert status == 200
        seen = await _timeline(session, nginx.base_url, token, set(rooms.values()), 2)
        assert seen == {room_id: ["reader away"] for room_id in rooms.values()}
        status, _, worker = await _call(session, "GET", sync, token)
        assert status == 200 and worker in WRITERS, worker

        await asyncio.to_thread(deployment["reader"].start)
        async with asyncio.timeout(TAKEOVER_SECONDS):
            while True:
                status, _, worker = await _call(session, "GET", sync, token)
                assert status == 200
                if worker == "reader":
                    break
                await asyncio.sleep(0.5)


async def _until_ok(
    session: aiohttp.ClientSession, method: str, url: str, token: str | None, body: Any
) -> tuple[dict[str, Any], str | None]:
    """``method`` at ``url`` (the same request, idempotent) until it answers 200, within
    ``TAKEOVER_SECONDS`` (502 from nginx or 503 from a process meanwhile): the answer
    and the process that gave it."""
    async with asyncio.timeout(TAKEOVER_SECONDS):
        while True:
            async with session.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {token}"} if token else {},
                timeout=TIMEOUT,
            ) as response:
                if response.status == 200:
                    return await response.json(), response.headers.get("X-Peyvand-Worker")
                assert response.status in (502, 503), (response.status, await response.text())
            await asyncio.sleep(0.2)


async def _account_data(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    data_type: str,
    wanted: Any,
    since: str | None = None,
) -> str:
    """Wait until /sync at ``base`` after ``since`` gives ``data_type``'s global account
    data as ``wanted`` (incrementally: its position moved on); the token after it."""
    async with asyncio.timeout(SYNC_SECONDS):
        while True:
            query = "?timeout=1000" + (f"&since={since}" if since is not None else "")
            status, answer, _ = await _call(session, "GET", _client(base, f"/sync{query}"), token)
            assert status == 200, answer
            since = str(answer["next_batch"])
            events = answer.get("account_data", {}).get("events", [])
            if {"type": data_type, "content": wanted} in events:
                return since


async def test_a_killed_first_writers_role_and_rooms_are_taken_over_then_handed_back(
    two_writers: tuple[Nginx, Deployment],
) -> None:
    """kill -9 of the first event writer, the primary one (every write but a room's
    events: account data, receipts, registration...): within ``TAKEOVER_SECONDS`` the
    second takes the role and the first's rooms through nginx, continuing each stream
    above what is stored, and the reader follows. Started again, the first takes them
    back."""
    nginx, deployment = two_writers
    base, reader = nginx.base_url, deployment["reader"].base_url
    async with aiohttp.ClientSession() as session:
        token = await _register(session, base, "alice")
        rooms = await _rooms_of_each_writer(session, base, token)
        data = _client(base, "/user/@alice:localhost/account_data/org.example.colour")
        _, worker = await _until_ok(session, "PUT", data, token, {"colour": "red"})
        assert worker == "writer"
        since = await _account_data(session, reader, token, "org.example.colour", {"colour": "red"})
        # The second writer is not the primary: it takes none of its writes.
        direct = data.replace(base, deployment["writer2"].base_url)
        status, refused, _ = await _call(session, "PUT", direct, token, {"colour": "no"})
        assert status == 503, refused
        await asyncio.to_thread(deployment["writer"].kill)

        _, worker = await _until_ok(session, "PUT", data, token, {"colour": "green"})
        assert worker == "writer2"
        since = await _account_data(
            session, reader, token, "org.example.colour", {"colour": "green"}, since
        )
        sent, worker = await _until_ok(
            session,
            "PUT",
            _client(base, f"/rooms/{rooms['writer']}/send/m.room.message/away"),
            token,
            {"msgtype": "m.text", "body": "first writer away"},
        )
        assert worker == "writer2"
        receipt = f"/rooms/{rooms['writer']}/receipt/m.read/{sent['event_id']}"
        await _until_ok(session, "POST", _client(base, receipt), token, {})
        bob = await _register(session, base, "bob")
        await _until_ok(session, "POST", _client(base, f"/join/{rooms['writer2']}"), bob, {})

        await asyncio.to_thread(deployment["writer"].start)
        async with asyncio.timeout(TAKEOVER_SECONDS):
            while True:
                _, worker = await _until_ok(session, "PUT", data, token, {"colour": "blue"})
                if worker == "writer":
                    break
                await asyncio.sleep(0.5)
        await _account_data(session, reader, token, "org.example.colour", {"colour": "blue"}, since)
        seen = await _timeline(session, reader, token, {rooms["writer"]}, 1)
        assert seen == {rooms["writer"]: ["first writer away"]}
