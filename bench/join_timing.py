"""The timed part of ``bench.federated_join``: a user of the joining server joins a room of
the origin over federation (Client-Server API ``POST /join/{roomIdOrAlias}?server_name=``;
Server-Server API "Joining Rooms": make_join / send_join), and the clock runs from the
request until:

1. the join returns (200);
2. the user can read: ``GET /rooms/{roomId}/messages?dir=b`` holds the marker, the room's
   latest event, sent on the origin just before the join (history ``shared``);
3. the user can send: ``PUT /rooms/{roomId}/send`` answers 200 and the origin serves the
   event (``GET /rooms/{roomId}/event/{eventId}`` as the room's creator);
4. the member list is complete: ``GET /rooms/{roomId}/joined_members`` counts every member.

Steps 2 and 3 run one after the other, step 4 beside them from the join's return; each is
polled until it holds or its bound passes (a missed step's time is NaN). A partial-state
join (MSC3706, ``omit_members``) may complete steps 1-3 before the joiner knows every
member; a full join completes step 4 at once.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from bench.client import Account, MatrixClient
from bench.workloads import _REQUEST_ERRORS, CpuProbe

ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class JoinBounds:
    """How long each step may take (seconds) and how often it is polled."""

    ready_seconds: float = 120.0
    members_seconds: float = 600.0
    poll_interval: float = 0.1
    members_poll_interval: float = 0.5


@dataclass(slots=True)
class JoinFigures:
    """Seconds from the ``POST /join`` to each step (NaN: not reached in its bound)."""

    server: str
    version: str = ""
    expected_members: int = 0
    join_status: int = 0
    join_seconds: float = math.nan
    read_seconds: float = math.nan
    send_accepted_seconds: float = math.nan
    send_seen_seconds: float = math.nan
    members_seconds: float = math.nan
    # The count in the first 200 answer of /joined_members (a server may hold the answer
    # back until its partial state is complete, as Peyvand and Synapse do).
    members_first_poll: int = 0
    members_seen: int = 0
    cpu_seconds: float = math.nan
    rss_peak_bytes: int = 0
    error: str = ""

    @property
    def ready_seconds(self) -> float:
        """Until the user can both read and send (NaN unless both happened)."""
        steps = (self.read_seconds, self.send_seen_seconds)
        return math.nan if any(math.isnan(s) for s in steps) else max(steps)


async def until(check: Callable[[], Awaitable[bool]], interval: float, deadline: float) -> float:
    """The ``time.perf_counter()`` at which ``check`` first holds, tried every ``interval``
    seconds (a request error counts as not yet) until ``deadline``; NaN if it never did."""
    while True:
        try:
            if await check():
                return time.perf_counter()
        except _REQUEST_ERRORS:
            pass
        if time.perf_counter() + interval > deadline:
            return math.nan
        await asyncio.sleep(interval)


async def time_join(
    joiner: MatrixClient,
    user: Account,
    origin: MatrixClient,
    creator: Account,
    room_id: str,
    origin_name: str,
    figures: JoinFigures,
    bounds: JoinBounds,
    cpu: CpuProbe,
) -> None:
    """``user`` (on ``joiner``) joins ``room_id`` via ``origin_name``; the figures of each
    step into ``figures``, whose ``expected_members`` is the count after the join."""
    marker = await origin.send(creator, room_id, f"marker-{uuid.uuid4().hex}", "latest")
    if marker.status != 200:
        figures.error = f"the origin's marker: {marker.status} {marker.body}"[:ERROR_CHARS]
        return
    cpu_before = cpu()
    started = time.perf_counter()
    probe = _Probe(joiner, user, origin, creator, quote(room_id), figures, bounds, started)
    reply = await joiner.request(
        "POST", f"join/{probe.room}", {}, user.access_token, params={"server_name": origin_name}
    )
    figures.join_status = reply.status
    if reply.status != 200:
        figures.error = f"join: {reply.body}"[:ERROR_CHARS]
        return
    figures.join_seconds = time.perf_counter() - started
    await asyncio.gather(probe.read_then_send(marker.body["event_id"]), probe.member_list())
    figures.cpu_seconds = cpu() - cpu_before


@dataclass(slots=True)
class _Probe:
    """The steps after the join: reading then sending, and beside them the member list."""

    joiner: MatrixClient
    user: Account
    origin: MatrixClient
    creator: Account
    room: str  # quoted for paths
    figures: JoinFigures
    bounds: JoinBounds
    started: float  # when the POST /join was sent

    async def read_then_send(self, marker_id: str) -> None:
        token = self.user.access_token

        async def reads() -> bool:
            params = {"dir": "b", "limit": "20"}
            path = f"rooms/{self.room}/messages"
            page = await self.joiner.request("GET", path, token=token, params=params)
            chunk = page.body.get("chunk", []) if page.status == 200 else []
            return any(event.get("event_id") == marker_id for event in chunk)

        sent: list[str] = []
        txn = f"joined-{uuid.uuid4().hex}"

        async def sends() -> bool:
            path = f"rooms/{self.room}/send/m.room.message/{txn}"
            body = {"msgtype": "m.text", "body": "sent by the joiner"}
            answer = await self.joiner.request("PUT", path, body, token)
            if answer.status == 200:
                sent.append(answer.body["event_id"])
            return bool(sent)

        async def seen_on_origin() -> bool:
            path = f"rooms/{self.room}/event/{quote(sent[0])}"
            reply = await self.origin.request("GET", path, token=self.creator.access_token)
            return reply.status == 200

        interval = self.bounds.poll_interval
        deadline = time.perf_counter() + self.bounds.ready_seconds
        self.figures.read_seconds = await until(reads, interval, deadline) - self.started
        deadline = time.perf_counter() + self.bounds.ready_seconds
        self.figures.send_accepted_seconds = await until(sends, interval, deadline) - self.started
        if sent:
            seen = await until(seen_on_origin, interval, deadline)
            self.figures.send_seen_seconds = seen - self.started

    async def member_list(self) -> None:
        figures = self.figures

        async def complete() -> bool:
            path = f"rooms/{self.room}/joined_members"
            members = await self.joiner.request("GET", path, token=self.user.access_token)
            if members.status != 200:
                return False
            count = len(members.body.get("joined", {}))
            figures.members_first_poll = figures.members_first_poll or count
            figures.members_seen = max(figures.members_seen, count)
            return count == figures.expected_members

        deadline = time.perf_counter() + self.bounds.members_seconds
        done = await until(complete, self.bounds.members_poll_interval, deadline)
        figures.members_seconds = done - self.started


async def leave(
    joiner: MatrixClient,
    user: Account,
    origin: MatrixClient,
    creator: Account,
    room_id: str,
    bounds: JoinBounds,
) -> bool:
    """``user`` leaves (untimed), and the origin is waited for (within
    ``bounds.ready_seconds``) until it holds the leave: the next joiner then meets a room
    whose state is settled. Whether the origin has it."""
    room = quote(room_id)
    await joiner.request("POST", f"rooms/{room}/leave", {}, user.access_token)
    path = f"rooms/{room}/state/m.room.member/{quote(user.user_id)}"

    async def left() -> bool:
        reply = await origin.request("GET", path, token=creator.access_token)
        return reply.status == 200 and reply.body.get("membership") == "leave"

    deadline = time.perf_counter() + bounds.ready_seconds
    return not math.isnan(await until(left, bounds.poll_interval, deadline))
