"""The sliding-sync workloads of ``bench.sliding_sync`` (issue 18), against one server.

- **Set-up** (not timed, ``grow``): a *reader* joined to N rooms, each created by a
  *sender* (preset ``public_chat``), joined by the reader, then given a few messages by the
  sender, so every room's bump stamp differs; rooms are set up ``setup_concurrency`` at a
  time. The rooms grow from one size to the next: the 1,000-room reader is the 100-room
  reader with 900 rooms more.
- **First response** (``first_responses``): K fresh connections (a new ``conn_id`` each, no
  ``pos``), each one request for the list window ``[[0, 19]]`` with ``timeline_limit`` 1
  and ``required_state`` name, avatar and ``$LAZY`` members; timed from send to full body.
  One request before them warms the server and is not counted.
- **Incremental wake** (``wakes``): one connection long-polls with its ``pos``; once the
  poll has been waiting ``poll_settle_seconds``, the sender sends into the reader's least
  recent room (outside the window, so it moves to the top); timed from the send's 200 to
  the poll's return holding the event (0 when it came back first), and from the send's
  request.
- **Open connections** (``hold_connections``): C connections, each a first request with
  its own ``conn_id`` and then a long-poll with its ``pos`` left waiting (re-polled if it
  ever returns); the server's RSS (process tree) once it holds them all and has settled,
  against before; its CPU to open them, and over a few seconds with all waiting.

Every loop is bounded in count and by the ``Clock``; measured requests count errors
instead of raising.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat
from bench.client import Account, BenchClientError, MatrixClient, new_session
from bench.workloads import Clock, bounded_map, percentile

SLIDING_SYNC = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
WINDOW_END = 19
REQUIRED_STATE = [["m.room.name", ""], ["m.room.avatar", ""], ["m.room.member", "$LAZY"]]
LIST_NAME = "all"
# Under both servers' caps (Peyvand's is 5 minutes); a poll that times out is re-polled.
LONG_POLL_MS = 120_000
REQUEST_TIMEOUT_SECONDS = 120.0
POLL_ATTEMPTS = 5  # polls per wake until one holds the event, or stays open to send into
HELD_REPOLLS = 20  # per held connection, should its long-poll ever return
CPU_WINDOW_SECONDS = 5.0
RSS_SAMPLES = 5
SOCKET_WAIT_SECONDS = 60.0
_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, BenchClientError)


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each phase is, and its time bounds (seconds)."""

    rooms: tuple[int, ...] = (100, 1000)
    messages_per_room: int = 2
    first_requests: int = 50
    wakes: int = 30
    connections: int = 1000
    setup_concurrency: int = 8
    open_concurrency: int = 8
    poll_settle_seconds: float = 0.5
    setup_seconds: float = 900.0
    phase_seconds: float = 180.0
    settle_seconds: float = 3.0


FULL = Sizes()
SMOKE = Sizes(
    rooms=(4, 24), messages_per_room=2, first_requests=3, wakes=3, connections=10,
    poll_settle_seconds=0.3, setup_seconds=60.0, phase_seconds=30.0, settle_seconds=0.5,
)  # fmt: skip


@dataclass(slots=True)
class SizeFigures:
    """Everything measured with the reader in ``requested_rooms`` rooms."""

    requested_rooms: int
    rooms: int = 0
    truncated: bool = False
    setup_seconds: float = math.nan
    # First response of a fresh connection.
    first_requests: int = 0
    first_errors: int = 0
    first_p50_ms: float = math.nan
    first_p99_ms: float = math.nan
    first_bytes: int = 0
    window_rooms: int = 0
    list_count: int = 0
    # Incremental wake.
    wakes: int = 0
    wake_missing: int = 0
    wake_p50_ms: float = math.nan
    wake_p99_ms: float = math.nan
    wake_from_request_p50_ms: float = math.nan
    wake_from_request_p99_ms: float = math.nan
    # Open connections (at the largest size only).
    connections_requested: int = 0
    connections_held: int = 0
    connection_errors: int = 0
    open_seconds: float = math.nan
    rss_before_bytes: int = 0
    rss_held_bytes: int = 0
    cpu_open_seconds: float = math.nan
    cpu_idle_seconds: float = math.nan

    @property
    def rss_growth_bytes(self) -> int:
        return self.rss_held_bytes - self.rss_before_bytes if self.rss_held_bytes else 0

    @property
    def kib_per_connection(self) -> float:
        if not self.connections_held:
            return math.nan
        return self.rss_growth_bytes / 1024 / self.connections_held

    @property
    def cpu_ms_per_connection(self) -> float:
        if not self.connections_held:
            return math.nan
        return self.cpu_open_seconds * 1000 / self.connections_held


@dataclass(slots=True)
class Setup:
    """The two users and the reader's rooms, oldest first."""

    reader: Account
    sender: Account
    rooms: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    size: int
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def list_body(conn_id: str) -> dict[str, Any]:
    """The request every connection makes: one list, the 20 most recent rooms."""
    return {
        "conn_id": conn_id,
        "lists": {
            LIST_NAME: {
                "ranges": [[0, WINDOW_END]],
                "timeline_limit": 1,
                "required_state": REQUIRED_STATE,
            }
        },
    }


async def sliding(
    session: aiohttp.ClientSession,
    base_url: str,
    account: Account,
    conn_id: str,
    pos: str | None = None,
    timeout_ms: int = 0,
) -> Answer:
    """One sliding-sync request; ``started``/``ended`` are ``perf_counter`` values."""
    params = {"timeout": str(timeout_ms)}
    if pos is not None:
        params["pos"] = pos
    started = time.perf_counter()
    async with session.post(
        f"{base_url.rstrip('/')}{SLIDING_SYNC}",
        json=list_body(conn_id),
        params=params,
        headers={"Authorization": f"Bearer {account.access_token}"},
        timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000 + REQUEST_TIMEOUT_SECONDS),
    ) as response:
        raw = await response.read()
    ended = time.perf_counter()
    body: Any = None
    if response.status == 200:
        body = json.loads(raw)
    return Answer(response.status, body, len(raw), started, ended)


def _pos(answer: Answer, what: str) -> str:
    if answer.status != 200 or not isinstance(answer.body, dict) or "pos" not in answer.body:
        raise BenchClientError(f"{what} answered {answer.status}")
    return str(answer.body["pos"])


def _holds(answer: Answer, room_id: str, event_id: str) -> bool:
    room = (answer.body or {}).get("rooms", {}).get(room_id, {})
    return any(event.get("event_id") == event_id for event in room.get("timeline", []))


async def register_pair(client: MatrixClient, prefix: str) -> Setup:
    reader = await client.register(f"{prefix}-reader")
    sender = await client.register(f"{prefix}-sender")
    return Setup(reader, sender)


async def grow(client: MatrixClient, setup: Setup, target: int, sizes: Sizes, clock: Clock) -> int:
    """Add rooms until the reader is in ``target`` (or the set-up time runs out)."""
    first = len(setup.rooms)
    made: dict[int, str] = {}

    async def one(index: int) -> None:
        room = await client.create_room(setup.sender)
        await client.join(setup.reader, room)
        for n in range(sizes.messages_per_room):
            reply = await client.send(setup.sender, room, f"fill-{index}-{n}", f"message {n}")
            if reply.status != 200:
                raise BenchClientError(f"send answered {reply.status}: {reply.body}")
        made[index] = room

    await bounded_map(
        range(first, target), one, sizes.setup_concurrency, clock.after(sizes.setup_seconds)
    )
    # Oldest first: by index, which is roughly the order of their last messages.
    setup.rooms.extend(made[index] for index in sorted(made))
    return len(setup.rooms)


async def first_responses(
    session: aiohttp.ClientSession,
    base_url: str,
    setup: Setup,
    figures: SizeFigures,
    sizes: Sizes,
    clock: Clock,
) -> None:
    """K fresh connections, one request each, one after another (after one warm-up)."""
    tag = uuid.uuid4().hex[:6]
    deadline = clock.after(sizes.phase_seconds)
    seconds: list[float] = []
    sizes_seen: list[int] = []
    for index in range(-1, sizes.first_requests):
        if time.perf_counter() > deadline:
            break
        try:
            answer = await sliding(session, base_url, setup.reader, f"first-{tag}-{index}")
        except _ERRORS:
            figures.first_errors += 1
            continue
        if answer.status != 200:
            figures.first_errors += 1
            continue
        listed = answer.body.get("lists", {}).get(LIST_NAME, {})
        figures.list_count = int(listed.get("count", 0))
        ops = listed.get("ops") or [{}]
        figures.window_rooms = len(ops[0].get("room_ids", []))
        if index >= 0:
            seconds.append(answer.seconds)
            sizes_seen.append(answer.size)
    figures.first_requests = len(seconds)
    figures.first_p50_ms = percentile(seconds, 50) * 1000
    figures.first_p99_ms = percentile(seconds, 99) * 1000
    figures.first_bytes = int(statistics.median(sizes_seen)) if sizes_seen else 0


async def wakes(
    client: MatrixClient,
    session: aiohttp.ClientSession,
    setup: Setup,
    figures: SizeFigures,
    sizes: Sizes,
    clock: Clock,
) -> None:
    """The sender sends into the least recent rooms while the reader long-polls."""
    base_url = client.base_url
    conn_id = f"wake-{uuid.uuid4().hex[:6]}"
    deadline = clock.after(sizes.phase_seconds)
    pos = _pos(await sliding(session, base_url, setup.reader, conn_id), "first request")
    from_200: list[float] = []
    from_request: list[float] = []
    for index in range(min(sizes.wakes, len(setup.rooms))):
        if time.perf_counter() > deadline:
            break
        room = setup.rooms[index]
        poll, pos = await _open_poll(session, base_url, setup.reader, conn_id, pos, sizes)
        if poll is None:
            figures.wake_missing += 1
            continue
        sent = await client.send(setup.sender, room, f"wake-{conn_id}-{index}", "wake up")
        sent_ended = time.perf_counter()
        sent_started = sent_ended - sent.seconds
        if sent.status != 200:
            poll.cancel()
            figures.wake_missing += 1
            continue
        event_id = str(sent.body["event_id"])
        answer: Answer | None = None
        for _ in range(POLL_ATTEMPTS):
            try:
                answer = await poll
            except _ERRORS:
                answer = None
                break
            if answer.status != 200:
                answer = None
                break
            pos = str(answer.body["pos"])
            if _holds(answer, room, event_id):
                break
            poll = asyncio.ensure_future(
                sliding(session, base_url, setup.reader, conn_id, pos, LONG_POLL_MS)
            )
            answer = None
        if answer is None:
            figures.wake_missing += 1
            continue
        from_200.append(max(0.0, answer.ended - sent_ended))
        from_request.append(answer.ended - sent_started)
    figures.wakes = len(from_200)
    figures.wake_p50_ms = percentile(from_200, 50) * 1000
    figures.wake_p99_ms = percentile(from_200, 99) * 1000
    figures.wake_from_request_p50_ms = percentile(from_request, 50) * 1000
    figures.wake_from_request_p99_ms = percentile(from_request, 99) * 1000


async def _open_poll(
    session: aiohttp.ClientSession,
    base_url: str,
    reader: Account,
    conn_id: str,
    pos: str,
    sizes: Sizes,
) -> tuple[asyncio.Future[Answer] | None, str]:
    """A long-poll that has been waiting ``poll_settle_seconds`` (re-polled if it returns
    before that), and the ``pos`` it was sent with."""
    for _ in range(POLL_ATTEMPTS):
        poll = asyncio.ensure_future(sliding(session, base_url, reader, conn_id, pos, LONG_POLL_MS))
        await asyncio.sleep(sizes.poll_settle_seconds)
        if not poll.done():
            return poll, pos
        try:
            pos = _pos(poll.result(), "long-poll")
        except _ERRORS:
            return None, pos
    return None, pos


async def hold_connections(
    base_url: str,
    pid: int,
    setup: Setup,
    figures: SizeFigures,
    sizes: Sizes,
    clock: Clock,
) -> None:
    """Open ``sizes.connections`` connections, each left long-polling; RSS and CPU."""
    count = sizes.connections
    figures.connections_requested = count
    if count <= 0:
        return
    raise_fd_limit(count)
    figures.rss_before_bytes = await _settled_rss(pid, sizes)
    base_sockets = _sockets(pid)
    tag = uuid.uuid4().hex[:6]
    deadline = clock.after(sizes.phase_seconds * 3)
    opened = asyncio.Semaphore(sizes.open_concurrency)
    waiting: set[int] = set()
    tasks: list[asyncio.Task[None]] = []

    async def hold(session: aiohttp.ClientSession, index: int) -> None:
        conn_id = f"held-{tag}-{index}"
        try:
            async with opened:
                if time.perf_counter() > deadline:
                    return
                pos = _pos(await sliding(session, base_url, setup.reader, conn_id), "open")
            for _ in range(HELD_REPOLLS):
                waiting.add(index)
                answer = await sliding(session, base_url, setup.reader, conn_id, pos, LONG_POLL_MS)
                waiting.discard(index)
                pos = _pos(answer, "held long-poll")
        except _ERRORS:
            figures.connection_errors += 1
        finally:
            waiting.discard(index)

    cpu_before = procstat.tree_cpu_seconds(pid)
    started = time.perf_counter()
    async with new_session() as session:
        try:
            tasks = [asyncio.create_task(hold(session, i)) for i in range(count)]
            while time.perf_counter() < deadline and len(waiting) < count:
                if all(task.done() for task in tasks):
                    break
                await asyncio.sleep(0.2)
            await _wait_for_sockets(pid, base_sockets + len(waiting))
            figures.open_seconds = round(time.perf_counter() - started, 1)
            figures.cpu_open_seconds = round(procstat.tree_cpu_seconds(pid) - cpu_before, 2)
            figures.rss_held_bytes = await _settled_rss(pid, sizes)
            figures.connections_held = len(waiting)
            cpu_idle = procstat.tree_cpu_seconds(pid)
            await asyncio.sleep(CPU_WINDOW_SECONDS)
            figures.cpu_idle_seconds = round(procstat.tree_cpu_seconds(pid) - cpu_idle, 2)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _settled_rss(pid: int, sizes: Sizes) -> int:
    """The median of a few samples of the tree's RSS, taken after it settles."""
    await asyncio.sleep(sizes.settle_seconds)
    samples = []
    for _ in range(RSS_SAMPLES):
        samples.append(procstat.tree_rss_bytes(pid))
        await asyncio.sleep(0.2)
    return int(statistics.median(samples))


def _sockets(pid: int) -> int:
    """Sockets open in ``pid``'s process tree."""
    count = 0
    for member in procstat.process_tree(pid):
        try:
            entries = list(Path(f"/proc/{member}/fd").iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                if os.readlink(entry).startswith("socket:"):
                    count += 1
            except OSError:
                continue  # closed meanwhile
    return count


async def _wait_for_sockets(pid: int, count: int) -> None:
    """Until the server holds ``count`` sockets (or a bounded wait ends: RSS is still read)."""
    deadline = time.monotonic() + SOCKET_WAIT_SECONDS
    for _ in range(int(SOCKET_WAIT_SECONDS * 2)):
        if time.monotonic() > deadline or _sockets(pid) >= count:
            return
        await asyncio.sleep(0.5)


def raise_fd_limit(connections: int) -> None:
    """Soft open-file limit up to what ``connections`` need (the hard limit at most)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + 1024
    if hard != resource.RLIM_INFINITY:
        needed = min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
