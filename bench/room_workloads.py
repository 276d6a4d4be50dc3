"""Hot-room and big-room workloads (issue 15 item 1), run against one server through
``MatrixClient``; ``bench.rooms`` runs them on both servers and prints the table.

- ``hot_room``: ``hot_senders`` members send at once into ONE room of ``hot_members``
  while every member long-polls /sync (``DELIVERY_FILTER``: lazy-loaded members, timeline
  10). Send throughput and latency; delivery from a send's 200 to each other member's
  /sync returning the event (0 when the /sync came back first), and from the send's
  request; server CPU per 1,000 messages.
- ``big_room``: one room grown to each member count in turn (joins through the API, not
  timed). At each size: a few messages' delivery to up to ``big_syncing`` long-polling
  members; server CPU per message with nobody syncing; ``/members`` and
  ``/joined_members`` latency; a newcomer's initial sync with lazy-loaded members.

A timeline limited to 10 events may skip messages when more than 10 arrive between two
syncs of a member (Client-Server API, "Syncing": ``limited``); a message a member never saw
that may lie before the first event of its latest limited timeline counts as ``skipped``;
only one that cannot (its send began after that event's send was answered, so it was
stored after it) counts as ``missing``. Senders send at once, so a message answered after
that first event's send began may still precede it. Every loop is bounded in count and
in time; a loop cut short says so (``truncated``) and the figures come from what completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from bench.client import Account, MatrixClient, Reply
from bench.workloads import (
    _REQUEST_ERRORS,
    DELIVERY_FILTER,
    LONG_POLL_MS,
    Clock,
    CpuProbe,
    bounded_map,
    percentile,
)


@dataclass(frozen=True, slots=True)
class RoomSizes:
    """How big each workload is, and its bounds (counts; seconds)."""

    hot_members: int = 200
    hot_senders: int = 16
    hot_sends_per_sender: int = 250
    big_members: tuple[int, ...] = (100, 1000)
    big_syncing: int = 1000
    big_messages: int = 3
    big_message_interval: float = 1.0
    big_cpu_messages: int = 50
    member_list_calls: int = 5
    initial_syncs: int = 3
    setup_concurrency: int = 8
    phase_seconds: float = 20.0
    setup_seconds: float = 600.0
    drain_seconds: float = 15.0
    settle_seconds: float = 2.0


FULL = RoomSizes()
SMOKE = RoomSizes(
    hot_members=6, hot_senders=3, hot_sends_per_sender=5, big_members=(4, 8), big_syncing=8,
    big_messages=2, big_message_interval=0.1, big_cpu_messages=5, member_list_calls=2,
    initial_syncs=2, phase_seconds=10.0, setup_seconds=60.0, drain_seconds=5.0,
    settle_seconds=0.5,
)  # fmt: skip


@dataclass(slots=True)
class HotRoomFigures:
    members: int = 0
    senders: int = 0
    requested: int = 0
    sent: int = 0
    send_errors: int = 0
    seconds: float = math.nan
    messages_per_second: float = math.nan
    send_p50_ms: float = math.nan
    send_p99_ms: float = math.nan
    deliveries: int = 0
    skipped: int = 0
    missing: int = 0
    limited_syncs: int = 0
    sync_errors: int = 0
    delivery_p50_ms: float = math.nan
    delivery_p99_ms: float = math.nan
    from_request_p50_ms: float = math.nan
    from_request_p99_ms: float = math.nan
    cpu_seconds: float = math.nan
    cpu_seconds_per_1000_messages: float = math.nan
    truncated: bool = False


@dataclass(slots=True)
class BigRoomFigures:
    requested_members: int
    members: int = 0
    join_seconds: float = math.nan
    syncing: int = 0
    messages: int = 0
    deliveries: int = 0
    skipped: int = 0
    missing: int = 0
    sync_errors: int = 0
    delivery_p50_ms: float = math.nan
    delivery_p99_ms: float = math.nan
    from_request_p50_ms: float = math.nan
    from_request_p99_ms: float = math.nan
    cpu_messages: int = 0
    cpu_ms_per_message: float = math.nan
    members_p50_ms: float = math.nan
    members_bytes: int = 0
    joined_members_p50_ms: float = math.nan
    joined_members_bytes: int = 0
    initial_sync_p50_ms: float = math.nan
    initial_sync_bytes: int = 0
    rss_peak_bytes: int = 0
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    """A message whose PUT /send answered 200: when the PUT started and ended."""

    sender: str
    started: float
    ended: float


@dataclass(slots=True)
class Deliveries:
    """What each member's long-polls returned from ``room``, and when."""

    room: str
    members: Sequence[Account]
    sent: dict[str, Sent] = field(default_factory=dict)
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    # Per member, the first event of each limited timeline it was given.
    gap_ends: dict[str, list[str]] = field(default_factory=dict)
    limited_syncs: int = 0
    sync_errors: int = 0
    # Long-polls answered (200).
    answered: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once sending is over: per sender, its last message; members who have seen all.
    finals: dict[str, str] | None = None
    settled: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for account in self.members:
            self.seen[account.user_id] = {}
            self.gap_ends[account.user_id] = []

    def finish_sending(self) -> None:
        finals: dict[str, str] = {}
        for event_id, sent in sorted(self.sent.items(), key=lambda item: item[1].ended):
            finals[sent.sender] = event_id
        self.finals = finals
        for account in self.members:
            self._check(account.user_id)

    def _check(self, user_id: str) -> None:
        if self.finals is None or user_id in self.settled:
            return
        seen = self.seen[user_id]
        if all(e in seen for s, e in self.finals.items() if s != user_id):
            self.settled.add(user_id)
            if len(self.settled) == len(self.members):
                self.done.set()

    async def poll(
        self, client: MatrixClient, account: Account, since: str, stop_at: float
    ) -> None:
        """Long-poll /sync until cancelled or ``stop_at``; note each event's arrival."""
        seen = self.seen[account.user_id]
        while time.perf_counter() < stop_at:
            try:
                reply = await client.sync(account, since, LONG_POLL_MS, DELIVERY_FILTER)
            except _REQUEST_ERRORS:
                self.sync_errors += 1
                await asyncio.sleep(0.1)
                continue
            now = time.perf_counter()
            if reply.status != 200:
                self.sync_errors += 1
                await asyncio.sleep(0.1)
                continue
            self.answered += 1
            since = reply.body["next_batch"]
            joined = reply.body.get("rooms", {}).get("join", {})
            timeline = joined.get(self.room, {}).get("timeline") or {}
            events = timeline.get("events", [])
            if timeline.get("limited") and events:
                self.limited_syncs += 1
                self.gap_ends[account.user_id].append(events[0]["event_id"])
            for event in events:
                seen.setdefault(event["event_id"], now)
            self._check(account.user_id)

    def tally(self) -> tuple[list[float], int, int]:
        """Latencies (seconds) of every delivery, and the counts skipped and missing."""
        latencies: list[float] = []
        skipped = missing = 0
        for account in self.members:
            seen = self.seen[account.user_id]
            # A message is stored while its send is in flight: one whose send began
            # before a gap's first event was answered may precede that event.
            gap_ends = [
                self.sent[e].ended for e in self.gap_ends[account.user_id] if e in self.sent
            ]
            latest_gap = max(gap_ends, default=-math.inf)
            for event_id, sent in self.sent.items():
                if sent.sender == account.user_id:
                    continue
                if event_id in seen:
                    latencies.append(max(0.0, seen[event_id] - sent.ended))
                elif sent.started < latest_gap:
                    skipped += 1
                else:
                    missing += 1
        return latencies, skipped, missing

    def from_requests(self) -> list[float]:
        """Latencies (seconds) of every delivery from the start of its send's request."""
        return [
            seen[event_id] - sent.started
            for account in self.members
            for event_id, sent in self.sent.items()
            if sent.sender != account.user_id and event_id in (seen := self.seen[account.user_id])
        ]


async def first_tokens(
    client: MatrixClient, members: Sequence[Account], concurrency: int, deadline: float
) -> list[tuple[Account, str]]:
    """Each member's initial sync (``DELIVERY_FILTER``): the token its long-polls start at."""

    async def one(account: Account) -> tuple[Account, str]:
        reply = await client.sync(account, sync_filter=DELIVERY_FILTER)
        if reply.status != 200:
            raise RuntimeError(f"initial /sync answered {reply.status}: {reply.body}")
        return account, str(reply.body["next_batch"])

    return await bounded_map(members, one, concurrency, deadline)


async def join_all(
    client: MatrixClient, members: Sequence[Account], room: str, concurrency: int, deadline: float
) -> int:
    """Join ``members`` to ``room`` (at most ``concurrency`` at once, none started after
    ``deadline``); how many joined."""

    async def one(account: Account) -> bool:
        await client.join(account, room)
        return True

    return len(await bounded_map(members, one, concurrency, deadline))


async def _polling(
    client: MatrixClient,
    deliveries: Deliveries,
    tokens: Sequence[tuple[Account, str]],
    stop_at: float,
) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(deliveries.poll(client, account, since, stop_at))
        for account, since in tokens
    ]


async def drain_deliveries(
    deliveries: Deliveries, tasks: list[asyncio.Task[None]], seconds: float
) -> bool:
    """Wait (at most ``seconds``) until every member has seen every message; then stop
    the long-polls. Whether the wait was cut short."""
    deliveries.finish_sending()
    cut = False
    try:
        await asyncio.wait_for(deliveries.done.wait(), max(0.0, seconds))
    except TimeoutError:
        cut = True
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return cut


async def hot_room(
    client: MatrixClient,
    members: Sequence[Account],
    sizes: RoomSizes,
    clock: Clock,
    cpu: CpuProbe,
) -> HotRoomFigures:
    """16 senders into one room of 200 while all 200 long-poll /sync."""
    figures = HotRoomFigures()
    setup_deadline = clock.after(sizes.setup_seconds)
    room = await client.create_room(members[0])
    joined = 1 + await join_all(client, members[1:], room, sizes.setup_concurrency, setup_deadline)
    members = members[:joined]
    tokens = await first_tokens(client, members, sizes.setup_concurrency, setup_deadline)
    figures.members = len(tokens)
    senders = [account for account, _ in tokens][: sizes.hot_senders]
    figures.senders = len(senders)
    figures.requested = len(senders) * sizes.hot_sends_per_sender
    deliveries = Deliveries(room, [account for account, _ in tokens])
    stop_at = clock.after(sizes.settle_seconds + sizes.phase_seconds + sizes.drain_seconds + 5)
    tasks = await _polling(client, deliveries, tokens, stop_at)
    await asyncio.sleep(sizes.settle_seconds)  # every long-poll is in flight and waiting
    latencies: list[float] = []
    deadline = clock.after(sizes.phase_seconds)

    async def loop(index: int, sender: Account) -> None:
        for n in range(sizes.hot_sends_per_sender):
            if time.perf_counter() > deadline:
                figures.truncated = True
                return
            started = time.perf_counter()
            try:
                reply = await client.send(sender, room, f"hot{index}-{n}", f"hot {index} {n}")
            except _REQUEST_ERRORS:
                figures.send_errors += 1
                continue
            ended = time.perf_counter()
            if reply.status != 200:
                figures.send_errors += 1
                continue
            deliveries.sent[reply.body["event_id"]] = Sent(sender.user_id, started, ended)
            latencies.append(ended - started)

    cpu_before = cpu()
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for index, sender in enumerate(senders):
            group.create_task(loop(index, sender))
    figures.seconds = time.perf_counter() - started
    figures.cpu_seconds = cpu() - cpu_before
    drain = min(sizes.drain_seconds, clock.stop_by - time.perf_counter())
    figures.truncated |= await drain_deliveries(deliveries, tasks, drain)
    figures.sent = len(latencies)
    figures.messages_per_second = figures.sent / figures.seconds if figures.seconds else math.nan
    figures.send_p50_ms = percentile(latencies, 50) * 1000
    figures.send_p99_ms = percentile(latencies, 99) * 1000
    if figures.sent:
        figures.cpu_seconds_per_1000_messages = figures.cpu_seconds / figures.sent * 1000
    delivered, figures.skipped, figures.missing = deliveries.tally()
    figures.deliveries = len(delivered)
    figures.limited_syncs = deliveries.limited_syncs
    figures.sync_errors = deliveries.sync_errors
    figures.delivery_p50_ms = percentile(delivered, 50) * 1000
    figures.delivery_p99_ms = percentile(delivered, 99) * 1000
    from_requests = deliveries.from_requests()
    figures.from_request_p50_ms = percentile(from_requests, 50) * 1000
    figures.from_request_p99_ms = percentile(from_requests, 99) * 1000
    return figures


async def _timed_gets(
    client: MatrixClient, account: Account, path: str, calls: int, deadline: float
) -> tuple[float, int]:
    """p50 latency (ms) and the last size of up to ``calls`` GETs of ``path``."""
    seconds: list[float] = []
    size = 0
    for _ in range(calls):
        if time.perf_counter() > deadline:
            break
        reply = await client.request("GET", path, token=account.access_token)
        if reply.status == 200:
            seconds.append(reply.seconds)
            size = reply.size
    return percentile(seconds, 50) * 1000, size


async def _initial_syncs(
    client: MatrixClient, account: Account, calls: int, deadline: float
) -> list[Reply]:
    replies: list[Reply] = []
    for n in range(calls):
        if time.perf_counter() > deadline:
            break
        # A distinct ``timeout`` per call: Synapse answers an identical /sync from its cache.
        reply = await client.sync(account, timeout_ms=n, sync_filter=DELIVERY_FILTER)
        if reply.status == 200:
            replies.append(reply)
    return replies


async def big_room_at(
    client: MatrixClient,
    room: str,
    members: Sequence[Account],
    newcomer: Account,
    figures: BigRoomFigures,
    sizes: RoomSizes,
    clock: Clock,
    cpu: CpuProbe,
) -> None:
    """Measure ``room`` whose members are ``members`` (``members[0]`` sends)."""
    sender = members[0]
    setup_deadline = clock.after(sizes.setup_seconds)
    syncing = [sender, *members[1 : sizes.big_syncing]][: sizes.big_syncing]
    tokens = await first_tokens(client, syncing, sizes.setup_concurrency, setup_deadline)
    figures.syncing = len(tokens)
    deliveries = Deliveries(room, [account for account, _ in tokens])
    span = sizes.big_messages * sizes.big_message_interval
    stop_at = clock.after(sizes.settle_seconds + span + sizes.drain_seconds + 5)
    tasks = await _polling(client, deliveries, tokens, stop_at)
    await asyncio.sleep(sizes.settle_seconds)
    for n in range(sizes.big_messages):
        started = time.perf_counter()
        reply = await client.send(sender, room, f"big{figures.requested_members}-{n}", "big")
        if reply.status == 200:
            ended = time.perf_counter()
            deliveries.sent[reply.body["event_id"]] = Sent(sender.user_id, started, ended)
        await asyncio.sleep(sizes.big_message_interval)
    drain = min(sizes.drain_seconds, clock.stop_by - time.perf_counter())
    figures.truncated |= await drain_deliveries(deliveries, tasks, drain)
    figures.messages = len(deliveries.sent)
    delivered, figures.skipped, figures.missing = deliveries.tally()
    figures.deliveries = len(delivered)
    figures.sync_errors = deliveries.sync_errors
    figures.delivery_p50_ms = percentile(delivered, 50) * 1000
    figures.delivery_p99_ms = percentile(delivered, 99) * 1000
    from_requests = deliveries.from_requests()
    figures.from_request_p50_ms = percentile(from_requests, 50) * 1000
    figures.from_request_p99_ms = percentile(from_requests, 99) * 1000

    await asyncio.sleep(sizes.settle_seconds)  # the long-polls' connections are gone
    deadline = clock.after(sizes.phase_seconds)
    cpu_before = cpu()
    for n in range(sizes.big_cpu_messages):
        if time.perf_counter() > deadline:
            figures.truncated = True
            break
        txn = f"cpu{figures.requested_members}-{n}"
        if (await client.send(sender, room, txn, "cpu")).status == 200:
            figures.cpu_messages += 1
    if figures.cpu_messages:
        figures.cpu_ms_per_message = (cpu() - cpu_before) / figures.cpu_messages * 1000

    base = f"rooms/{quote(room)}"
    calls = sizes.member_list_calls
    figures.members_p50_ms, figures.members_bytes = await _timed_gets(
        client, sender, f"{base}/members", calls, deadline
    )
    figures.joined_members_p50_ms, figures.joined_members_bytes = await _timed_gets(
        client, sender, f"{base}/joined_members", calls, deadline
    )
    await client.join(newcomer, room)
    replies = await _initial_syncs(client, newcomer, sizes.initial_syncs, deadline)
    figures.initial_sync_p50_ms = percentile([r.seconds for r in replies], 50) * 1000
    if replies:
        figures.initial_sync_bytes = int(percentile([float(r.size) for r in replies], 50))
