"""FederationSender against a fake transport and the real outbox store (SQLite).

The transport records every attempt; it can fail, hang, or hold requests at a gate until
the test releases them. Backoffs are a few milliseconds, so the whole file runs fast;
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from peyvand.federation.sender import FederationSender
from peyvand.storage.bus import LocalBus
from peyvand.storage.federation_outbox import FederationOutboxStore, OutboxRow
from peyvand.storage.migrations import run_migrations
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import JsonDict, ServerName

HERE = ServerName("here.example")
ONE = ServerName("one.example")
TWO = ServerName("two.example")
EVIL = ServerName("evil.example")


@dataclass
class Attempt:
    destination: str
    txn_id: str
    body: JsonDict
    at: float
    ok: bool = False


@dataclass
class FakeTransport:
    """Fails a destination ``fail[d]`` times (-1: always), hangs it ``hang[d]`` times, and
    holds its requests while ``gates[d]`` is unset."""

    latency: float = 0.0
    fail: dict[str, int] = field(default_factory=dict)
    hang: dict[str, int] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)

    async def send_transaction(
        self,
        destination: str,
        txn_id: str,
        body: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the FederationTransport signature)
    ) -> Any:
        assert timeout is not None
        attempt = Attempt(destination, txn_id, body, now())
        self.attempts.append(attempt)
        self.in_flight[destination] = self.in_flight.get(destination, 0) + 1
        self.max_in_flight[destination] = max(
            self.max_in_flight.get(destination, 0), self.in_flight[destination]
        )
        try:
            if destination in self.gates:
                await self.gates[destination].wait()
            await asyncio.sleep(self.latency)
            if self.hang.get(destination, 0):
                self.hang[destination] -= 1
                await asyncio.sleep(3600)
            if self.fail.get(destination, 0):
                self.fail[destination] -= 1
                raise ConnectionRefusedError(f"{destination} is down")
        finally:
            self.in_flight[destination] -= 1
        attempt.ok = True
        return {
            "pdus": {
                pdu["event_id"]: (
                    {"error": self.errors[pdu["event_id"]]}
                    if pdu["event_id"] in self.errors
                    else {}
                )
                for pdu in body["pdus"]
            }
        }

    def delivered(self, destination: str) -> list[Attempt]:
        return [a for a in self.attempts if a.ok and a.destination == destination]

    def pdu_ids(self, destination: str) -> list[str]:
        return [p["event_id"] for a in self.delivered(destination) for p in a.body["pdus"]]

    def edus(self, destination: str) -> list[JsonDict]:
        return [e for a in self.delivered(destination) for e in a.body["edus"]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def now() -> float:
    return asyncio.get_running_loop().time()


async def wait_until(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.002)


async def wait_until_empty(world: World, within: float = 3.0) -> None:
    """Until nothing is queued in the store (deletes follow the 200 asynchronously)."""
    async with asyncio.timeout(within):
        while True:
            if not await world.store.destinations_with_pending():
                return
            await asyncio.sleep(0.002)


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


@dataclass
class World:
    db: SqliteDatabase
    store: FederationOutboxStore
    transport: FakeTransport
    clock: FakeClock
    events: dict[str, JsonDict]
    senders: list[FederationSender]

    async def load_pdus(self, event_ids: Sequence[str]) -> Mapping[str, JsonDict]:
        return {e: self.events[e] for e in event_ids if e in self.events}

    async def sender(self, **kwargs: Any) -> FederationSender:
        options: dict[str, Any] = {"min_backoff": 0.005, "max_backoff": 0.05}
        options.update(kwargs)
        sender = FederationSender(
            HERE, self.store, self.transport, self.load_pdus, clock=self.clock, **options
        )
        self.senders.append(sender)
        await sender.start()
        return sender

    def event(self, room: str, n: int) -> str:
        event_id = f"${room[1:].split(':')[0]}-{n}"
        self.events[event_id] = {"event_id": event_id, "room_id": room, "depth": n}
        return event_id

    async def commit(
        self,
        sender: FederationSender,
        events: Iterable[tuple[str, str]],
        destinations: list[ServerName],
    ) -> None:
        """What the lead does: rows in the events' commit, then notify_new."""
        rows = [r for room, e in events for r in sender.rows_for_event(room, e, destinations)]
        async with self.db.transaction() as txn:
            await self.store.add_in_txn(txn, rows)
        sender.notify_new({r.destination for r in rows})

    async def queued(self, destination: ServerName) -> int:
        batch = await self.store.pending(destination, 10_000, 10_000)
        return len(batch.pdus) + len(batch.edus)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await SqliteDatabase.open(str(tmp_path / "outbox.db"))
    await run_migrations(db)
    world = World(db, FederationOutboxStore(db), FakeTransport(), FakeClock(), {}, [])
    try:
        yield world
    finally:
        async with asyncio.timeout(5):
            for sender in world.senders:
                await sender.stop()
        await db.close()


async def test_pdus_arrive_in_order_in_transactions_of_at_most_50(world: World) -> None:
    world.transport.latency = 0.002
    sender = await world.sender()
    sent: list[str] = []
    for batch in range(12):
        events = [("!a:here", world.event("!a:here", batch * 10 + i)) for i in range(10)]
        await world.commit(sender, events, [ONE, TWO, HERE])
        sent += [e for _, e in events]
    await wait_until(lambda: world.transport.pdu_ids(ONE) == sent)
    await wait_until(lambda: world.transport.pdu_ids(TWO) == sent)
    attempts = world.transport.attempts
    assert all(len(a.body["pdus"]) <= 50 for a in attempts)
    assert len({a.txn_id for a in attempts}) == len(attempts)
    assert {a.destination for a in attempts} == {ONE, TWO}
    assert all(a.body["origin"] == HERE for a in attempts)
    assert all(a.body["origin_server_ts"] == int(world.clock.now * 1000) for a in attempts)
    assert world.transport.max_in_flight == {ONE: 1, TWO: 1}
    await wait_until_empty(world)


async def test_edu_limits_ordering_and_ephemeral_merging(world: World) -> None:
    gate = world.transport.gates[ONE] = asyncio.Event()
    sender = await world.sender()
    typing = {"room_id": "!a:here", "user_id": "@alice:here", "typing": True}
    await sender.send_edu(ONE, "m.typing", typing, durable=False)
    await wait_until(lambda: len(world.transport.attempts) == 1)
    # Queued while the first transaction is in flight:
    await sender.send_edu(ONE, "m.direct_to_device", {"n": 0}, durable=True)
    await sender.send_durable_edus([(ONE, "m.direct_to_device", {"n": n}) for n in range(1, 250)])
    await sender.send_edu(ONE, "m.typing", {**typing, "typing": False}, durable=False)
    bob_typing = {"room_id": "!a:here", "user_id": "@bob:here", "typing": True}
    await sender.send_edu(ONE, "m.typing", bob_typing, durable=False)
    receipt = {"event_ids": ["$x"], "data": {"ts": 1}}
    for user in ("@alice:here", "@bob:here"):
        content = {"!a:here": {"m.read": {user: receipt}}}
        await sender.send_edu(ONE, "m.receipt", content, durable=False)
    for user in ("@alice:here", "@bob:here", "@carol:here", "@alice:here"):
        push = {"push": [{"user_id": user, "presence": "online", "last_active_ago": 5}]}
        await sender.send_edu(ONE, "m.presence", push, durable=False)
    gate.set()

    await wait_until(
        lambda: sum(e["edu_type"] == "m.direct_to_device" for e in world.transport.edus(ONE)) == 250
    )
    delivered = world.transport.delivered(ONE)
    assert all(len(a.body["edus"]) <= 100 for a in delivered)
    assert delivered[0].body["edus"] == [{"edu_type": "m.typing", "content": typing}]
    to_device = [e["content"]["n"] for e in world.transport.edus(ONE) if "n" in e["content"]]
    assert to_device == list(range(250))
    ephemeral = [e for e in delivered[1].body["edus"] if e["edu_type"] != "m.direct_to_device"]
    assert ephemeral == [
        {"edu_type": "m.typing", "content": {**typing, "typing": False}},
        {"edu_type": "m.typing", "content": bob_typing},
        {
            "edu_type": "m.receipt",
            "content": {"!a:here": {"m.read": {"@alice:here": receipt, "@bob:here": receipt}}},
        },
        {
            "edu_type": "m.presence",
            "content": {
                "push": [
                    {"user_id": u, "presence": "online", "last_active_ago": 5}
                    for u in ("@bob:here", "@carol:here", "@alice:here")
                ]
            },
        },
    ]
    # Typing; 94 to-device + 4 ephemeral (6 entries); 100 to-device; 56 to-device.
    assert [len(a.body["edus"]) for a in delivered] == [1, 98, 100, 56]
    await wait_until_empty(world)


async def test_durable_edus_and_pdus_survive_a_restart(world: World) -> None:
    world.transport.fail[ONE] = -1
    first = await world.sender(min_backoff=10.0, max_backoff=10.0)
    event = world.event("!a:here", 1)
    await world.commit(first, [("!a:here", event)], [ONE])
    update = {"user_id": "@alice:here", "device_id": "D", "stream_id": 1}
    await first.send_edu(ONE, "m.device_list_update", update, durable=True)
    await first.send_edu(
        ONE, "m.typing", {"room_id": "!a:here", "user_id": "@a:here"}, durable=False
    )
    await wait_until(lambda: len(world.transport.attempts) == 1)
    await first.stop()
    assert await world.queued(ONE) == 2

    world.transport.fail[ONE] = 0
    world.clock.now += 5
    await world.sender()
    await wait_until(lambda: len(world.transport.delivered(ONE)) == 1)
    assert world.transport.pdu_ids(ONE) == [event]
    assert world.transport.edus(ONE) == [{"edu_type": "m.device_list_update", "content": update}]
    first_txn, second_txn = (a.txn_id for a in world.transport.attempts)
    assert first_txn != second_txn
    await wait_until_empty(world)


async def test_failures_retry_the_same_transaction_with_growing_backoff(world: World) -> None:
    world.transport.fail[ONE] = 4
    sender = await world.sender(min_backoff=0.02, max_backoff=10.0)
    event = world.event("!a:here", 1)
    await world.commit(sender, [("!a:here", event)], [ONE])
    await sender.send_edu(ONE, "m.signing_key_update", {"user_id": "@a:here"}, durable=True)
    await wait_until(lambda: len(world.transport.edus(ONE)) == 1)
    attempts = world.transport.attempts[:5]
    assert [a.ok for a in attempts] == [False] * 4 + [True]
    assert len({a.txn_id for a in attempts}) == 1
    assert all(a.body == attempts[0].body for a in attempts)
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.015
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))
    assert world.transport.pdu_ids(ONE) == [event]
    assert [e["edu_type"] for e in world.transport.edus(ONE)] == ["m.signing_key_update"]
    await wait_until_empty(world)


async def test_backoff_is_capped(world: World) -> None:
    world.transport.fail[ONE] = 8
    sender = await world.sender(min_backoff=0.01, max_backoff=0.03)
    await world.commit(sender, [("!a:here", world.event("!a:here", 1))], [ONE])
    # Uncapped, the 8 waits would take 2.5 s.
    await wait_until(lambda: len(world.transport.delivered(ONE)) == 1, within=1.0)
    assert len(world.transport.attempts) == 9


async def test_a_hanging_request_times_out_and_is_retried(world: World) -> None:
    world.transport.hang[ONE] = 1
    sender = await world.sender(request_timeout=0.05)
    await world.commit(sender, [("!a:here", world.event("!a:here", 1))], [ONE])
    await wait_until(lambda: len(world.transport.delivered(ONE)) == 1)
    first, second = world.transport.attempts
    assert first.txn_id == second.txn_id
    assert second.at - first.at >= 0.05


async def test_wake_retries_at_once(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.transport.fail[ONE] = 5
    sender = await world.sender(min_backoff=0.05, max_backoff=100.0, rng=NoJitter())
    sender.wake(ONE)  # nothing known about ONE: nothing happens
    with caplog.at_level(logging.INFO, logger="peyvand.federation.sender"):
        await world.commit(sender, [("!a:here", world.event("!a:here", 1))], [ONE])
        # Attempts at 0, 0.05, 0.15, 0.35, 0.75; the next would be at 1.55.
        await wait_until(lambda: len(world.transport.attempts) == 5)
        await asyncio.sleep(0.1)
        # Still backing off: the sixth attempt is due only at 1.55.
        assert len(world.transport.attempts) == 5 and not world.transport.delivered(ONE)
        woken_at = now()
        sender.wake(ONE)
        await wait_until(lambda: len(world.transport.delivered(ONE)) == 1, within=0.3)
    assert world.transport.attempts[-1].at - woken_at < 0.05
    assert "one.example is unreachable" in caplog.text
    assert "one.example is back after 5 failed attempts" in caplog.text


async def test_catch_up_sends_only_the_newest_pdu_per_room(world: World) -> None:
    gate = world.transport.gates[ONE] = asyncio.Event()
    world.transport.fail[ONE] = 1
    sender = await world.sender(catchup_threshold=10)
    rooms = ["!a:here", "!b:here", "!c:here"]
    await world.commit(sender, [(rooms[0], world.event(rooms[0], 0))], [ONE])
    await wait_until(lambda: len(world.transport.attempts) == 1)
    # While ONE is down, 30 more events in three rooms and a to-device message.
    events = [(rooms[n % 3], world.event(rooms[n % 3], n)) for n in range(1, 31)]
    await world.commit(sender, events, [ONE])
    await sender.send_edu(ONE, "m.direct_to_device", {"n": 1}, durable=True)
    gate.set()
    await wait_until(lambda: len(world.transport.delivered(ONE)) == 1)
    first, second = world.transport.attempts
    assert first.body["pdus"] == [world.events["$a-0"]]
    assert second.txn_id != first.txn_id
    assert world.transport.pdu_ids(ONE) == ["$b-28", "$c-29", "$a-30"]
    assert world.transport.edus(ONE) == [{"edu_type": "m.direct_to_device", "content": {"n": 1}}]
    await wait_until_empty(world)


async def test_catch_up_after_a_restart(world: World) -> None:
    rows = [
        OutboxRow.for_pdu(ONE, f"!r{n % 4}:here", world.event(f"!r{n % 4}:here", n))
        for n in range(1, 301)
    ]
    await world.store.add(rows)
    first = await world.sender(catchup_threshold=200)
    await wait_until(lambda: len(world.transport.delivered(ONE)) == 1)
    assert world.transport.pdu_ids(ONE) == ["$r1-297", "$r2-298", "$r3-299", "$r0-300"]
    await wait_until_empty(world)
    await first.stop()
    # A backlog under the threshold is sent in full.
    rows = [OutboxRow.for_pdu(TWO, "!r:here", world.event("!r:here", n)) for n in range(1, 201)]
    await world.store.add(rows)
    await world.sender(catchup_threshold=200)
    await wait_until(lambda: len(world.transport.pdu_ids(TWO)) == 200)
    assert [len(a.body["pdus"]) for a in world.transport.delivered(TWO)] == [50] * 4


async def test_typing_is_dropped_when_the_destination_stays_down(world: World) -> None:
    gate = world.transport.gates[ONE] = asyncio.Event()
    world.transport.fail[ONE] = 1
    sender = await world.sender()
    typing = {"room_id": "!a:here", "user_id": "@alice:here", "typing": True}
    await sender.send_edu(ONE, "m.typing", typing, durable=False)
    await wait_until(lambda: len(world.transport.attempts) == 1)
    world.clock.now += 61
    gate.set()
    # The failed typing-only transaction is not retried: the worker goes idle.
    await wait_until(lambda: world.transport.in_flight.get(ONE) == 0)
    await asyncio.sleep(0.1)
    assert len(world.transport.attempts) == 1
    receipt = {"!a:here": {"m.read": {"@alice:here": {"event_ids": ["$x"], "data": {}}}}}
    await sender.send_edu(ONE, "m.receipt", receipt, durable=False)
    await wait_until(lambda: len(world.transport.delivered(ONE)) == 1)
    assert world.transport.edus(ONE) == [{"edu_type": "m.receipt", "content": receipt}]


async def test_denied_destinations_get_nothing(world: World) -> None:
    allowed = {ONE: True, EVIL: False}
    sender = await world.sender(allows=lambda d: allowed.get(d, True))
    event = world.event("!a:here", 1)
    await world.commit(sender, [("!a:here", event)], [ONE, EVIL, HERE])
    await sender.send_edu(EVIL, "m.direct_to_device", {"n": 1}, durable=True)
    await sender.send_edu(
        EVIL, "m.typing", {"room_id": "!a:here", "user_id": "@a:h"}, durable=False
    )
    # Rows queued before the server was denied are dropped unsent.
    await world.store.add([OutboxRow.for_pdu(TWO, "!a:here", event)])
    allowed[TWO] = False
    sender.notify_new([TWO, EVIL])
    await wait_until(lambda: len(world.transport.delivered(ONE)) == 1)
    await wait_until_empty(world)
    assert {a.destination for a in world.transport.attempts} == {ONE}


async def test_pdu_errors_are_logged_and_not_retried(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    sender = await world.sender()
    events = [("!a:here", world.event("!a:here", n)) for n in range(3)]
    world.transport.errors["$a-1"] = "You are not allowed to send a message to this room."
    with caplog.at_level(logging.WARNING, logger="peyvand.federation.sender"):
        await world.commit(sender, events, [ONE])
        await wait_until(lambda: len(world.transport.delivered(ONE)) == 1)
        await wait_until_empty(world)
    assert "one.example refused $a-1: You are not allowed" in caplog.text
    await asyncio.sleep(0.02)
    assert len(world.transport.attempts) == 1


async def test_stop_returns_promptly_during_backoff_and_in_flight(world: World) -> None:
    world.transport.fail[ONE] = -1
    world.transport.gates[TWO] = asyncio.Event()
    sender = await world.sender(min_backoff=60.0, max_backoff=600.0, request_timeout=60.0)
    await world.commit(sender, [("!a:here", world.event("!a:here", 1))], [ONE, TWO])
    await wait_until(lambda: len(world.transport.attempts) == 2)
    async with asyncio.timeout(1.0):
        await sender.stop()
    assert sorted(await world.store.destinations_with_pending()) == [ONE, TWO]
    # A stopped sender starts nothing new.
    sender.notify_new([ONE])
    await asyncio.sleep(0.01)
    assert len(world.transport.attempts) == 2


async def test_a_deployments_processes_queue_and_one_sends(world: World) -> None:
    """Issue 21: a process without the sender role queues rows, durable and ephemeral EDUs
    and wake-ups, and the one with it sends them; rows whose message was lost are found
    by its poll."""
    bus = LocalBus("writer")
    elsewhere = FederationSender(HERE, world.store, world.transport, world.load_pdus)
    elsewhere.replicate(bus, sends=False)
    sending = FederationSender(
        HERE, world.store, world.transport, world.load_pdus, clock=world.clock,
        min_backoff=0.2, max_backoff=60, poll_interval=0.05,
    )  # fmt: skip
    sending.replicate(bus, sends=True)
    world.senders.append(sending)
    await bus.start()
    await sending.start()
    await sending.hold_shard(0)  # its lease taken (``wiring.sender_shards``)
    await world.commit(elsewhere, [("!a:here", world.event("!a:here", 1))], [ONE, TWO])
    await elsewhere.send_edu(ONE, "m.direct_to_device", {"n": 1}, durable=True)
    typing = {"room_id": "!a:here", "user_id": "@alice:here", "typing": True}
    await elsewhere.send_edu(TWO, "m.typing", typing, durable=False)
    await wait_until(lambda: world.transport.pdu_ids(ONE) == ["$a-1"])
    await wait_until(
        lambda: {"edu_type": "m.typing", "content": typing} in world.transport.edus(TWO)
    )
    await wait_until(lambda: len(world.transport.edus(ONE)) == 1)
    assert world.transport.pdu_ids(TWO) == ["$a-1"]
    # Queued without a word on the bus: the poll finds it.
    await world.store.add([OutboxRow.for_pdu(ONE, "!a:here", world.event("!a:here", 2))])
    await wait_until(lambda: world.transport.pdu_ids(ONE) == ["$a-1", "$a-2"])
    await wait_until_empty(world)
    # A presence push too large for one message arrives in parts.
    push = [{"user_id": f"@user{n:03}:here", "presence": "online", "status_msg": "x" * 100}
            for n in range(100)]  # fmt: skip
    await elsewhere.send_edu(ONE, "m.presence", {"push": push}, durable=False)
    await wait_until(
        lambda: sum(len(e["content"]["push"]) for e in world.transport.edus(ONE)
                    if e["edu_type"] == "m.presence") == 100
    )  # fmt: skip
    # A server that talked to us is retried at once by the sending process.
    world.transport.fail[TWO] = -1
    await elsewhere.send_edu(TWO, "m.direct_to_device", {"n": 2}, durable=True)
    # Four failures: the next try is at least 0.8 x 1.6 s away.
    await wait_until(lambda: any(f >= 4 for d, _, f in sending.queue_status() if d == TWO), 5)
    world.transport.fail[TWO] = 0
    elsewhere.wake(TWO)
    await wait_until(
        lambda: {"n": 2} in [e["content"] for e in world.transport.edus(TWO)], within=1.0
    )
    await bus.stop()


async def test_sending_processes_share_the_destinations(world: World) -> None:
    """Two sending processes: each destination is sent to by exactly one of them, whoever
    queued for it."""
    bus = LocalBus("writer")
    transports = [FakeTransport(), FakeTransport()]
    senders = [
        FederationSender(HERE, world.store, transport, world.load_pdus, poll_interval=0.05)
        for transport in transports
    ]
    for sender in senders:
        sender.replicate(bus, sends=True, shards=2)
        world.senders.append(sender)
    await bus.start()
    for index, sender in enumerate(senders):
        await sender.start()
        await sender.hold_shard(index)
    servers = [ServerName(f"s{n}.example") for n in range(12)]
    event = world.event("!a:here", 1)
    await world.commit(senders[0], [("!a:here", event)], servers)
    for server in servers:
        typing = {"room_id": "!a:here", "user_id": "@alice:here", "typing": True}
        await senders[1].send_edu(server, "m.typing", typing, durable=False)

    def sent(transport: FakeTransport) -> set[str]:
        return {a.destination for a in transport.attempts if a.ok}

    await wait_until(lambda: len(sent(transports[0]) | sent(transports[1])) == 12)
    await wait_until(
        lambda: all(
            len(t.edus(s)) + len(t.pdu_ids(s)) in (0, 2) for t in transports for s in servers
        )
    )
    assert sent(transports[0]) and sent(transports[1])
    assert not sent(transports[0]) & sent(transports[1])
    await wait_until_empty(world)
    await bus.stop()
    with pytest.raises(ValueError):
        await senders[0].hold_shard(2)


async def test_a_shard_released_by_one_sender_is_sent_by_the_next_holder(world: World) -> None:
    """A sender that releases a shard (its lease lost or handed back) stops sending to
    its destinations, a failing one's retries included; the sender that takes the shard
    sends what is queued for them, and what is queued after."""
    bus = LocalBus("writer")
    transports = [FakeTransport(), FakeTransport()]
    senders = [
        FederationSender(
            HERE, world.store, transport, world.load_pdus, poll_interval=60, min_backoff=0.05
        )
        for transport in transports
    ]
    for sender in senders:
        sender.replicate(bus, sends=True, shards=2)
        world.senders.append(sender)
    await bus.start()
    for sender in senders:
        await sender.start()
    await senders[1].hold_shard(1)
    servers = [ServerName(f"s{n}.example") for n in range(12)]
    theirs = [s for s in servers if zlib.crc32(s.encode()) % 2 == 1]
    assert theirs
    down = theirs[0]
    transports[1].fail[down] = -1  # never answers sender 1
    await world.commit(senders[1], [("!a:here", world.event("!a:here", 1))], theirs)
    await wait_until(lambda: any(d == down and f >= 2 for d, _, f in senders[1].queue_status()))
    await wait_until(lambda: all(transports[1].pdu_ids(s) == ["$a-1"] for s in theirs[1:]))
    await senders[1].release_shard(1)
    assert senders[1].queue_status() == []
    attempts = len(transports[1].attempts)
    await world.commit(senders[1], [("!a:here", world.event("!a:here", 2))], theirs)
    await asyncio.sleep(0.3)  # several backoff steps: sender 1 no longer tries
    assert len(transports[1].attempts) == attempts
    await senders[0].hold_shard(1)
    # The failing server gets both PDUs from the new holder, the others the second.
    expected = {s: ["$a-1", "$a-2"] if s == down else ["$a-2"] for s in theirs}
    await wait_until(lambda: {s: transports[0].pdu_ids(s) for s in theirs} == expected)
    assert not any(s not in theirs for s in {a.destination for a in transports[0].attempts})
    await wait_until_empty(world)
    await bus.stop()
