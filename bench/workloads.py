"""The workloads, run against one server through ``MatrixClient``.

1. ``sequential_sends``: one user PUTs messages into one room, one after another.
2. ``concurrent_sends``: 32 users send at once into 8 rooms (4 senders a room).
3. ``delivery``: 200 users in one room long-poll /sync; one of them sends; we time from the
   send's 200 to each receiver's /sync returning the event.
4. ``initial_sync``: a user in 100 rooms of 50 messages each does initial syncs.

Setup (registration, rooms, joins, filling rooms) is not measured. Every loop is bounded in
count and in time; a loop cut short by its time bound says so (``truncated``) and the
figures are computed from what completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from bench.client import Account, MatrixClient

T = TypeVar("T")
R = TypeVar("R")

Log = Callable[[str], None]
CpuProbe = Callable[[], float]

# Both servers get the same filter for the delivery long-polls: lazy-loaded members keep the
# 200-member room's state out of every response, as Element asks for.
DELIVERY_FILTER: dict[str, Any] = {
    "room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 10}}
}
LONG_POLL_MS = 30_000
_REQUEST_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is, and its time bounds (seconds)."""

    users: int = 200
    sequential_sends: int = 1000
    concurrent_senders: int = 32
    concurrent_rooms: int = 8
    sends_per_sender: int = 150
    delivery_messages: int = 30
    delivery_interval: float = 0.25
    sync_rooms: int = 100
    messages_per_room: int = 50
    initial_syncs: int = 20
    setup_concurrency: int = 8
    phase_seconds: float = 20.0
    setup_seconds: float = 120.0
    fill_seconds: float = 200.0
    drain_seconds: float = 10.0
    settle_seconds: float = 2.0


FULL = Sizes()
SMOKE = Sizes(
    users=4, sequential_sends=10, concurrent_senders=4, concurrent_rooms=2,
    sends_per_sender=3, delivery_messages=3, delivery_interval=0.05, sync_rooms=3,
    messages_per_room=2, initial_syncs=3, phase_seconds=15.0, setup_seconds=30.0,
    fill_seconds=30.0, drain_seconds=5.0, settle_seconds=0.5,
)  # fmt: skip


@dataclass(slots=True)
class SendFigures:
    """Workloads 1 and 2."""

    requested: int
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    truncated: bool = False
    messages_per_second: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    cpu_seconds: float = math.nan


@dataclass(slots=True)
class DeliveryFigures:
    """Workload 3."""

    users: int
    messages: int = 0
    deliveries: int = 0
    missing: int = 0
    sync_errors: int = 0
    truncated: bool = False
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    # From the send's request (a /sync answered before the sender's 200 reads 0 above).
    from_request_p50_ms: float = math.nan
    from_request_p99_ms: float = math.nan


@dataclass(slots=True)
class InitialSyncFigures:
    """Workload 4."""

    rooms: int = 0
    messages: int = 0
    samples: int = 0
    errors: int = 0
    truncated: bool = False
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    size_bytes: int = 0


@dataclass(slots=True)
class Figures:
    """Everything the workloads measured on one server."""

    sequential: SendFigures
    concurrent: SendFigures
    delivery: DeliveryFigures
    initial_sync: InitialSyncFigures
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_seconds_per_1000_messages(self) -> float:
        """Server CPU over the measured loops of workloads 1 and 2, per 1,000 messages."""
        sent = self.sequential.sent + self.concurrent.sent
        cpu = self.sequential.cpu_seconds + self.concurrent.cpu_seconds
        return cpu / sent * 1000 if sent else math.nan


@dataclass(frozen=True, slots=True)
class Clock:
    """Deadlines as ``time.perf_counter()`` values, never later than ``stop_by``: the
    whole run's bound cuts every loop short rather than overrunning."""

    stop_by: float = math.inf

    def after(self, seconds: float) -> float:
        return min(time.perf_counter() + seconds, self.stop_by)


def _no_cpu() -> float:
    return math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def bounded_map(
    items: Iterable[T],
    work: Callable[[T], Awaitable[R]],
    concurrency: int,
    deadline: float,
) -> list[R]:
    """``work`` over ``items`` with at most ``concurrency`` at once; nothing new starts after
    ``deadline`` (a ``time.perf_counter()`` value). Results in completion order."""
    pending = iter(items)
    results: list[R] = []

    async def worker() -> None:
        for item in pending:
            if time.perf_counter() > deadline:
                return
            results.append(await work(item))

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return results


async def register_users(
    client: MatrixClient, prefix: str, count: int, sizes: Sizes, clock: Clock
) -> list[Account]:
    deadline = clock.after(sizes.setup_seconds)
    return await bounded_map(
        (f"{prefix}-{i}" for i in range(count)),
        client.register,
        sizes.setup_concurrency,
        deadline,
    )


async def sequential_sends(
    client: MatrixClient, sender: Account, sizes: Sizes, clock: Clock, cpu: CpuProbe = _no_cpu
) -> SendFigures:
    """Workload 1: PUT /send, one at a time, by one user into one room."""
    room = await client.create_room(sender)
    figures = SendFigures(requested=sizes.sequential_sends)
    latencies: list[float] = []
    cpu_before = cpu()
    started = time.perf_counter()
    deadline = clock.after(sizes.phase_seconds)
    for n in range(sizes.sequential_sends):
        if time.perf_counter() > deadline:
            figures.truncated = True
            break
        await _send_one(client, sender, room, f"seq{n}", figures, latencies)
    _finish_sends(figures, latencies, time.perf_counter() - started)
    figures.cpu_seconds = cpu() - cpu_before
    return figures


async def concurrent_sends(
    client: MatrixClient,
    senders: Sequence[Account],
    sizes: Sizes,
    clock: Clock,
    cpu: CpuProbe = _no_cpu,
) -> SendFigures:
    """Workload 2: every sender loops PUT /send into its room (sender i -> room i mod 8)."""
    setup_deadline = clock.after(sizes.setup_seconds)
    owners = senders[: sizes.concurrent_rooms]
    rooms = [await client.create_room(owner) for owner in owners]
    targets = [rooms[i % len(rooms)] for i in range(len(senders))]
    joiners = list(zip(senders, targets, strict=True))[len(rooms) :]
    await bounded_map(
        joiners, lambda pair: client.join(*pair), sizes.setup_concurrency, setup_deadline
    )
    figures = SendFigures(requested=sizes.sends_per_sender * len(senders))
    latencies: list[float] = []
    cpu_before = cpu()
    started = time.perf_counter()
    deadline = clock.after(sizes.phase_seconds)

    async def loop(index: int) -> None:
        for n in range(sizes.sends_per_sender):
            if time.perf_counter() > deadline:
                figures.truncated = True
                return
            await _send_one(
                client, senders[index], targets[index], f"c{index}-{n}", figures, latencies
            )

    async with asyncio.TaskGroup() as group:
        for index in range(len(senders)):
            group.create_task(loop(index))
    _finish_sends(figures, latencies, time.perf_counter() - started)
    figures.cpu_seconds = cpu() - cpu_before
    return figures


async def _send_one(
    client: MatrixClient,
    sender: Account,
    room: str,
    txn_id: str,
    figures: SendFigures,
    latencies: list[float],
) -> None:
    try:
        reply = await client.send(sender, room, txn_id, f"message {txn_id}")
    except _REQUEST_ERRORS:
        figures.errors += 1
        return
    if reply.status == 200:
        figures.sent += 1
        latencies.append(reply.seconds)
    else:
        figures.errors += 1


def _finish_sends(figures: SendFigures, latencies: list[float], seconds: float) -> None:
    figures.seconds = seconds
    figures.messages_per_second = figures.sent / seconds if seconds > 0 else math.nan
    figures.p50_ms = percentile(latencies, 50) * 1000
    figures.p99_ms = percentile(latencies, 99) * 1000


async def delivery(
    client: MatrixClient, users: Sequence[Account], sizes: Sizes, clock: Clock
) -> DeliveryFigures:
    """Workload 3: every user long-polls /sync; ``users[0]`` sends into the shared room."""
    sender = users[0]
    setup_deadline = clock.after(sizes.setup_seconds)
    room = await client.create_room(sender)
    joined = [sender]

    async def join(account: Account) -> None:
        await client.join(account, room)
        joined.append(account)

    await bounded_map(users[1:], join, sizes.setup_concurrency, setup_deadline)

    async def first_token(account: Account) -> tuple[Account, str]:
        reply = await client.sync(account, sync_filter=DELIVERY_FILTER)
        if reply.status != 200:
            raise RuntimeError(f"initial /sync answered {reply.status}: {reply.body}")
        return account, str(reply.body["next_batch"])

    polling = await bounded_map(joined, first_token, sizes.setup_concurrency, setup_deadline)
    figures = DeliveryFigures(users=len(polling))
    received: dict[str, dict[str, float]] = {account.user_id: {} for account, _ in polling}
    stop = asyncio.Event()
    delivered = asyncio.Event()
    sent_at: dict[str, float] = {}
    started_at: dict[str, float] = {}
    receivers = [received[account.user_id] for account, _ in polling[1:]]
    sending_done = False

    def check_delivered() -> None:
        if sending_done and all(sent_at.keys() <= seen.keys() for seen in receivers):
            delivered.set()

    hard_stop = clock.after(sizes.phase_seconds + sizes.drain_seconds + 5)

    async def poll(account: Account, since: str) -> None:
        seen = received[account.user_id]
        while not stop.is_set() and time.perf_counter() < hard_stop:
            try:
                reply = await client.sync(account, since, LONG_POLL_MS, DELIVERY_FILTER)
            except _REQUEST_ERRORS:
                figures.sync_errors += 1
                await asyncio.sleep(0.1)
                continue
            now = time.perf_counter()
            if reply.status != 200:
                figures.sync_errors += 1
                await asyncio.sleep(0.1)
                continue
            since = reply.body["next_batch"]
            timeline = reply.body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline")
            for event in (timeline or {}).get("events", []):
                seen.setdefault(event["event_id"], now)
            check_delivered()

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(poll(account, since)) for account, since in polling]
        await asyncio.sleep(sizes.settle_seconds)  # every long-poll is in flight and waiting
        deadline = clock.after(sizes.phase_seconds)
        for n in range(sizes.delivery_messages):
            if time.perf_counter() > deadline:
                figures.truncated = True
                break
            reply = await client.send(sender, room, f"d{n}", f"delivery {n}")
            if reply.status == 200:
                ended = time.perf_counter()
                sent_at[reply.body["event_id"]] = ended
                started_at[reply.body["event_id"]] = ended - reply.seconds
            await asyncio.sleep(sizes.delivery_interval)
        sending_done = True
        check_delivered()
        with contextlib.suppress(TimeoutError):
            drain = min(sizes.drain_seconds, clock.stop_by - time.perf_counter())
            await asyncio.wait_for(delivered.wait(), max(0.0, drain))
        stop.set()
        for task in tasks:
            task.cancel()

    latencies = [
        max(0.0, seen[event_id] - at)
        for seen in receivers
        for event_id, at in sent_at.items()
        if event_id in seen
    ]
    figures.messages = len(sent_at)
    figures.deliveries = len(latencies)
    figures.missing = len(sent_at) * len(receivers) - len(latencies)
    figures.p50_ms = percentile(latencies, 50) * 1000
    figures.p99_ms = percentile(latencies, 99) * 1000
    from_request = [
        seen[event_id] - at for seen in receivers for event_id, at in started_at.items()
        if event_id in seen
    ]  # fmt: skip
    figures.from_request_p50_ms = percentile(from_request, 50) * 1000
    figures.from_request_p99_ms = percentile(from_request, 99) * 1000
    return figures


async def initial_sync(
    client: MatrixClient, reader: Account, sizes: Sizes, clock: Clock
) -> InitialSyncFigures:
    """Workload 4: fill ``sync_rooms`` rooms with messages, then time initial syncs."""
    figures = InitialSyncFigures()
    # The fill leaves time for the measured syncs before the run's bound.
    fill_clock = Clock(clock.stop_by - min(sizes.phase_seconds, 10.0))
    setup_deadline = fill_clock.after(sizes.fill_seconds)
    rooms = await bounded_map(
        range(sizes.sync_rooms),
        lambda _: client.create_room(reader),
        sizes.setup_concurrency,
        setup_deadline,
    )
    figures.rooms = len(rooms)
    fill = SendFigures(requested=len(rooms) * sizes.messages_per_room)
    sends = itertools.product(range(sizes.messages_per_room), enumerate(rooms))

    async def send(item: tuple[int, tuple[int, str]]) -> None:
        n, (r, room) = item
        await _send_one(client, reader, room, f"i{r}-{n}", fill, [])

    await bounded_map(sends, send, sizes.setup_concurrency, setup_deadline)
    figures.messages = fill.sent
    figures.truncated = fill.sent < fill.requested
    latencies: list[float] = []
    sizes_seen: list[float] = []
    deadline = clock.after(sizes.phase_seconds)
    for n in range(sizes.initial_syncs):
        if time.perf_counter() > deadline:
            figures.truncated = True
            break
        # A distinct ``timeout`` per request: Synapse answers a repeated identical /sync from
        # its response cache; the timeout is ignored by an initial sync otherwise.
        reply = await client.sync(reader, timeout_ms=n)
        if reply.status != 200:
            figures.errors += 1
            continue
        latencies.append(reply.seconds)
        sizes_seen.append(reply.size)
    figures.samples = len(latencies)
    figures.p50_ms = percentile(latencies, 50) * 1000
    figures.p99_ms = percentile(latencies, 99) * 1000
    figures.size_bytes = int(percentile(sizes_seen, 50)) if sizes_seen else 0
    return figures


async def run_all(
    client: MatrixClient,
    sizes: Sizes,
    prefix: str,
    clock: Clock = Clock(),
    cpu: CpuProbe = _no_cpu,
    log: Log = lambda _: None,
) -> Figures:
    """Every workload in order; ``cpu`` (the server's CPU seconds so far) is read around
    the measured loops of workloads 1-2 to give CPU per 1,000 messages."""
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 2)
        mark = now
        log(f"  {name}: {phases[name]:.1f} s")

    count = max(sizes.users, sizes.concurrent_senders) + 1
    accounts = await register_users(client, prefix, count, sizes, clock)
    if len(accounts) < count:
        raise RuntimeError(f"registered only {len(accounts)} of {count} users in time")
    reader, users = accounts[0], accounts[1:]
    phase("register users")
    sequential = await sequential_sends(client, users[0], sizes, clock, cpu)
    phase("1 sequential sends")
    senders = users[: sizes.concurrent_senders]
    concurrent = await concurrent_sends(client, senders, sizes, clock, cpu)
    phase("2 concurrent sends")
    delivered = await delivery(client, users[: sizes.users], sizes, clock)
    phase("3 delivery")
    synced = await initial_sync(client, reader, sizes, clock)
    phase("4 initial sync")
    return Figures(sequential, concurrent, delivered, synced, phases)
