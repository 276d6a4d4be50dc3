"""One appservice's sender against fakes of its store, interest, extras and HTTP push:
a failed transaction goes out again unchanged, a live queue that overflows is read back
from the store without a gap or a repeat, extras ride along and are acknowledged only
after a 200, and the status follows failures and recovery."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from peyvand.federation.appservice_client import AppServiceError, AppServiceTarget
from peyvand.services.appservice import sender as sender_module
from peyvand.services.appservice.extras import AppServiceExtras, ExtrasBatch
from peyvand.services.appservice.interest import AppServiceInterest, EventFacts
from peyvand.services.appservice.registration import ApplicationService, parse_registration
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.services.appservice.sender import AppServiceSender, SenderDeps
from peyvand.services.appservice.transactions import AppServiceTransactions
from peyvand.storage.appservice_txns import (
    AppServiceProgress,
    AppServiceTxnStore,
    PendingTxn,
    StreamEvent,
)
from peyvand.storage.models import EventToPersist, NewStateGroup
from peyvand.types import EventID, JsonDict, RoomID, ServerName

ROOM = RoomID("!watched:localhost")
OTHER_ROOM = RoomID("!other:localhost")


def appservice() -> ApplicationService:
    return parse_registration(
        {
            "id": "bridge",
            "url": "http://127.0.0.1:9/",
            "as_token": "as",
            "hs_token": "hs",
            "sender_localpart": "bot",
            "namespaces": {"users": [{"exclusive": True, "regex": "@ghost_.*"}]},
        },
        ServerName("localhost"),
    )


def event_id(position: int) -> EventID:
    return EventID(f"$e{position}")


@dataclass
class FakeStore:
    """The rows of one appservice, and the stored events (all in ``ROOM`` unless told)."""

    events: list[StreamEvent] = field(default_factory=list)
    pending: PendingTxn | None = None
    acknowledged: list[PendingTxn] = field(default_factory=list)
    pages: int = 0
    # Each database transaction: "pending", "ack+pending" (one commit) or "ack".
    commits: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    last_txn_id: int = 0

    async def add(self, appservice_ids: Sequence[str], events_position: int) -> None:
        for appservice_id in appservice_ids:
            self.positions.setdefault(appservice_id, events_position)

    async def get_progress(self, appservice_ids: Sequence[str]) -> dict[str, AppServiceProgress]:
        return {
            i: AppServiceProgress(self.positions[i], None, self.last_txn_id, None, self.pending)
            for i in appservice_ids
        }

    def add_events(self, positions: range, room_id: RoomID = ROOM) -> None:
        self.events.extend(
            StreamEvent(p, event_id(p), room_id, "m.room.message", None, "@alice:localhost", 1)
            for p in positions
        )

    async def store_pending(
        self, appservice_id: str, txn: PendingTxn, answered: tuple[PendingTxn, int] | None = None
    ) -> None:
        self.commits.append("ack+pending" if answered is not None else "pending")
        if answered is not None:
            self._acknowledge(answered[0])
        assert self.pending is None
        self.pending = txn
        self.last_txn_id = txn.txn_id

    async def acknowledge(self, appservice_id: str, txn: PendingTxn, now_ms: int) -> None:
        self.commits.append("ack")
        self._acknowledge(txn)

    def _acknowledge(self, txn: PendingTxn) -> None:
        assert self.pending is not None and self.pending.txn_id == txn.txn_id
        self.pending = None
        self.acknowledged.append(txn)
        self.positions["bridge"] = txn.events_position

    async def events_after(self, after: int, up_to: int, limit: int) -> list[StreamEvent]:
        self.pages += 1
        found = [e for e in self.events if after < e.stream_ordering <= up_to]
        return found[:limit]


class FakeInterest:
    def reset(self) -> None:
        """Nothing is kept."""

    async def is_interested(
        self,
        appservice: ApplicationService,
        room_id: RoomID,
        sender: str,
        event_type: str,
        state_key: str | None,
    ) -> bool:
        return room_id == ROOM

    async def wanted_at(
        self,
        appservices: Sequence[ApplicationService],
        event: EventFacts,
        state_group: int,
        new_group: NewStateGroup | None = None,
    ) -> list[ApplicationService]:
        return list(appservices) if event.room_id == ROOM else []


@dataclass
class FakeExtras:
    """Hands out ``batches`` in turn (then empty ones), and records acknowledgements."""

    batches: list[ExtrasBatch] = field(default_factory=list)
    asked: list[str | None] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)

    async def collect(
        self, appservice: ApplicationService, since: str | None, limit: int
    ) -> ExtrasBatch:
        self.asked.append(since)
        if self.batches:
            return self.batches.pop(0)
        return ExtrasBatch({}, since or "p0", 0)

    async def acknowledged_(self, appservice: ApplicationService, position: str) -> None:
        self.acknowledged.append(position)


@dataclass
class FakeAppService:
    """The push: fails while ``failing``; records every attempt."""

    failing: bool = False
    attempts: list[tuple[str, JsonDict]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def push(self, target: AppServiceTarget, txn_id: str, body: JsonDict) -> None:
        self.attempts.append((txn_id, body))
        self.changed.set()
        if self.failing:
            raise AppServiceError("status", "HTTP 500", 500)

    def delivered(self) -> list[str]:
        """The event IDs of the attempts of distinct transactions that succeeded, in order."""
        seen: dict[str, list[str]] = {}
        for txn_id, body in self.attempts:
            seen[txn_id] = [e["event_id"] for e in body["events"]]
        return [e for events in seen.values() for e in events]

    async def wait_for(self, check: Callable[[], bool], limit: float = 5.0) -> None:
        async with asyncio.timeout(limit):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def load(queued: Sequence[tuple[int, EventID]]) -> list[JsonDict]:
    return [{"event_id": event_id} for _, event_id in queued]


@dataclass
class Rig:
    store: FakeStore
    extras: FakeExtras
    target: FakeAppService
    sender: AppServiceSender

    async def settle(self) -> None:
        """Until the sender has nothing left to send (bounded)."""
        deadline = time.monotonic() + 5.0
        while True:
            status = self.sender.status()
            if not (status.queue_length or status.catching_up or self.store.pending):
                return
            assert time.monotonic() < deadline, self.sender.status()
            await asyncio.sleep(0.01)


def deps_for(store: FakeStore, extras: FakeExtras, target: FakeAppService) -> SenderDeps:
    fake_extras: Any = SimpleNamespace(collect=extras.collect, acknowledged=extras.acknowledged_)
    return SenderDeps(
        store=cast(AppServiceTxnStore, store),
        interest=cast(AppServiceInterest, FakeInterest()),
        extras=cast(AppServiceExtras, fake_extras),
        push=target.push,
        load=load,
        now_ms=lambda: int(time.time() * 1000),
    )


def rig(
    store: FakeStore | None = None,
    extras: FakeExtras | None = None,
    *,
    position: int = 0,
    catch_up_to: int = 0,
    failing: bool = False,
) -> Rig:
    store = store or FakeStore()
    extras = extras or FakeExtras()
    target = FakeAppService(failing)
    deps = deps_for(store, extras, target)
    progress = AppServiceProgress(position, None, 0, None, store.pending)
    return Rig(store, extras, target, AppServiceSender(appservice(), progress, catch_up_to, deps))


def offer(sender: AppServiceSender, positions: range, room_id: RoomID = ROOM) -> None:
    for p in positions:
        if room_id == ROOM:
            sender.on_event(p, event_id(p))
        sender.on_seen(p)


async def test_a_failed_transaction_is_sent_again_unchanged() -> None:
    r = rig(failing=True)
    offer(r.sender, range(1, 4))
    r.sender.start()
    try:
        await r.target.wait_for(lambda: len(r.target.attempts) >= 1)
        status = r.sender.status()
        assert (status.state, status.consecutive_failures, status.queue_length) == (
            "backing_off",
            1,
            3,
        )
        assert status.last_error is not None and "500" in status.last_error
        offer(r.sender, range(4, 6))  # queued behind the pending transaction
        assert r.sender.retry_now()
        await r.target.wait_for(lambda: len(r.target.attempts) >= 2)
        r.target.failing = False
        assert r.sender.retry_now()
        await r.settle()
    finally:
        await r.sender.stop()
    first, second, third = r.target.attempts[:3]
    assert first == second == third
    assert first[0] == "1" and [e["event_id"] for e in first[1]["events"]] == [
        "$e1",
        "$e2",
        "$e3",
    ]
    assert r.target.delivered() == [f"$e{p}" for p in range(1, 6)]
    assert [t.events_position for t in r.store.acknowledged] == [3, 5]
    # The first 200 is stored with the next transaction, the last alone.
    assert r.store.commits == ["pending", "ack+pending", "ack"]
    assert r.sender.status().state == "up" and r.sender.status().consecutive_failures == 0


async def test_a_stored_pending_transaction_goes_first_after_a_restart() -> None:
    store = FakeStore()
    store.add_events(range(1, 9))
    store.pending = PendingTxn(7, {"events": [{"event_id": "$e2"}]}, 2, None, 1)
    r = rig(store, position=0, catch_up_to=8)
    r.sender.start()
    try:
        await r.settle()
    finally:
        await r.sender.stop()
    assert r.target.attempts[0] == ("7", {"events": [{"event_id": "$e2"}]})
    # Caught up after the pending transaction's position, with the next ID.
    assert r.target.attempts[1][0] == "8"
    assert r.target.delivered() == [f"$e{p}" for p in range(2, 9)]


async def test_an_overflowing_live_queue_is_read_back_without_gap_or_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_module, "LIVE_QUEUE_MAX", 3)
    store = FakeStore()
    store.add_events(range(1, 41))
    store.add_events(range(41, 61), OTHER_ROOM)
    r = rig(store, failing=True)
    offer(r.sender, range(1, 3))
    r.sender.start()
    try:
        await r.target.wait_for(lambda: len(r.target.attempts) >= 1)
        offer(r.sender, range(3, 41))  # 3, 4, 5 queued, the rest past the bound
        offer(r.sender, range(41, 61), OTHER_ROOM)  # seen, not wanted
        r.target.failing = False
        r.sender.retry_now()
        await r.settle()
    finally:
        await r.sender.stop()
    assert r.target.delivered() == [f"$e{p}" for p in range(1, 41)]
    assert r.store.pages >= 1
    # The last transaction moved past the unwanted events seen after it.
    assert r.store.acknowledged[-1].events_position == 60


async def test_extras_ride_along_and_are_acknowledged_after_the_200() -> None:
    extras = FakeExtras(
        [
            ExtrasBatch({}, "p0", 0),
            ExtrasBatch({"ephemeral": [{"type": "m.typing"}]}, "p1", 1),
        ]
    )
    r = rig(extras=extras, failing=True)
    r.sender.start()
    try:
        await asyncio.sleep(0.05)
        assert r.target.attempts == [] and extras.asked == [None]
        r.sender.on_extras()
        await r.target.wait_for(lambda: len(r.target.attempts) >= 1)
        assert extras.acknowledged == []
        r.target.failing = False
        r.sender.retry_now()
        await r.settle()
    finally:
        await r.sender.stop()
    assert r.target.attempts[-1][1] == {"events": [], "ephemeral": [{"type": "m.typing"}]}
    assert extras.asked == [None, "p0"]
    assert extras.acknowledged == ["p1"]
    assert r.store.acknowledged[-1].extras_position == "p1"


async def test_a_late_invite_from_another_server_takes_its_place_in_stream_order() -> None:
    """An invite stored after events with later positions were routed (its position was
    taken first) goes out in stream order, and the acknowledged position covers it."""
    r = rig()
    offer(r.sender, range(5, 7))
    offer(r.sender, range(4, 5))
    offer(r.sender, range(7, 8))
    r.sender.start()
    try:
        await r.settle()
    finally:
        await r.sender.stop()
    assert r.target.delivered() == ["$e4", "$e5", "$e6", "$e7"]
    assert r.store.acknowledged[-1].events_position == 7


def persisted(position: int, room_id: RoomID = ROOM) -> EventToPersist:
    pdu = SimpleNamespace(
        event_id=event_id(position),
        room_id=room_id,
        sender="@alice:localhost",
        type="m.room.message",
        state_key=None,
    )
    return cast(
        EventToPersist,
        SimpleNamespace(pdu=pdu, stream_ordering=position, state_group=1, new_state_group=None),
    )


async def test_routing_by_interest_without_backfill_and_across_reloads() -> None:
    """Committed batches reach the sender of an interested appservice (not backfill,
    not other rooms); an appservice seen first starts at the newest event; one removed
    by a reload stops, and added back resumes from its stored position."""
    store, target = FakeStore(), FakeAppService()
    registry = AppServiceRegistry([], ServerName("localhost"), services=[appservice()])

    async def newest() -> int:
        return 10

    transactions = AppServiceTransactions(
        registry, deps_for(store, FakeExtras(), target), max_position=newest
    )
    await transactions.start()
    try:
        assert store.positions == {"bridge": 10}
        batch = [persisted(-5), persisted(11), persisted(12, OTHER_ROOM), persisted(13)]
        transactions.on_persisted(batch)
        await target.wait_for(lambda: target.delivered() == ["$e11", "$e13"])
        transactions.on_registrations([])

        def stopped() -> bool:
            status = transactions.status_of("bridge")
            return status is not None and status.last_txn_id == 0

        for _ in range(100):
            if stopped() and store.pending is None:
                break
            await asyncio.sleep(0.01)
        assert stopped() and store.positions["bridge"] == 13
        store.add_events(range(14, 15))
        transactions.on_persisted([persisted(14)])
        transactions.on_registrations([appservice()])
        await target.wait_for(lambda: target.delivered() == ["$e11", "$e13", "$e14"])
    finally:
        await transactions.stop()


@dataclass
class GatedStore(FakeStore):
    """``store_pending`` of the first transaction waits for ``gate`` (a commit waiting
    for the writer)."""

    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def store_pending(
        self, appservice_id: str, txn: PendingTxn, answered: tuple[PendingTxn, int] | None = None
    ) -> None:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.entered.set()
            await gate.wait()
        await super().store_pending(appservice_id, txn, answered)


async def test_an_invite_inserted_while_a_transaction_is_stored_is_sent_once() -> None:
    """A late invite placed before the entries being taken into a transaction stays
    queued: every entry goes out exactly once, and no acknowledged position passes it."""
    gate = asyncio.Event()
    store = GatedStore(gate=gate)
    r = rig(store, position=10, catch_up_to=10)
    offer(r.sender, range(12, 14))
    r.sender.start()
    try:
        await asyncio.wait_for(store.entered.wait(), 5)
        r.sender.on_event(11, EventID("$invite11"))
        gate.set()
        await r.settle()
    finally:
        await r.sender.stop()
    assert sorted(r.target.delivered()) == sorted(["$e12", "$e13", "$invite11"])
    assert len(r.target.delivered()) == 3
    assert [t.events_position for t in r.store.acknowledged] == [10, 13]


def invite_pdu(position: int) -> Any:
    return SimpleNamespace(
        event_id=EventID(f"$invite{position}"),
        room_id=OTHER_ROOM,
        sender="@ghost_remote:elsewhere",
        type="m.room.member",
        state_key="@ghost_1:localhost",
    )


async def test_a_remote_invite_moves_no_position_past_events_not_yet_committed() -> None:
    """An invite whose position was taken before event 10's, stored first: the
    acknowledged position stays below event 10 until it is committed and sent."""
    store, target = FakeStore(), FakeAppService()
    registry = AppServiceRegistry([], ServerName("localhost"), services=[appservice()])

    async def newest() -> int:
        return 9

    class Everything(FakeInterest):
        async def is_interested(self, *args: Any) -> bool:
            return True

        async def wanted_at(self, appservices: Any, *args: Any) -> list[ApplicationService]:
            return list(appservices)

    deps = replace_interest(deps_for(store, FakeExtras(), target), Everything())
    transactions = AppServiceTransactions(registry, deps, max_position=newest)
    await transactions.start()
    try:
        transactions.on_remote_invite(invite_pdu(11), 11)
        await target.wait_for(lambda: target.delivered() == ["$invite11"])
        for _ in range(50):
            if store.pending is None and store.acknowledged:
                break
            await asyncio.sleep(0.01)
        assert store.positions["bridge"] < 10
        transactions.on_persisted([persisted(10)])
        await target.wait_for(lambda: target.delivered() == ["$invite11", "$e10"])
    finally:
        await transactions.stop()
    assert store.positions["bridge"] >= 10


def replace_interest(deps: SenderDeps, interest: FakeInterest) -> SenderDeps:
    return dataclasses.replace(deps, interest=cast(AppServiceInterest, interest))


async def test_a_reload_keeps_the_sender_of_an_unchanged_registration() -> None:
    """A reload parses every file again: an equal registration keeps its sender (its
    live queue and the transaction it is retrying); a changed one gets a new sender."""
    store, target = FakeStore(), FakeAppService(failing=True)
    registry = AppServiceRegistry([], ServerName("localhost"), services=[appservice()])

    async def newest() -> int:
        return 10

    transactions = AppServiceTransactions(
        registry, deps_for(store, FakeExtras(), target), max_position=newest
    )
    await transactions.start()
    try:
        transactions.on_persisted([persisted(11)])
        await target.wait_for(lambda: len(target.attempts) >= 1)
        first = transactions._senders["bridge"]
        renewed = appservice()
        transactions.on_registrations([renewed])
        transactions.on_persisted([persisted(12)])
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert transactions._senders["bridge"] is first
        assert first.appservice is renewed and first.status().queue_length == 2
        changed = dataclasses.replace(appservice(), hs_token="hs2")
        transactions.on_registrations([changed])
        for _ in range(100):
            if transactions._senders.get("bridge") not in (None, first):
                break
            await asyncio.sleep(0.01)
        assert transactions._senders["bridge"].appservice is changed
    finally:
        await transactions.stop()


async def test_stopping_a_sender_lets_its_database_write_finish() -> None:
    """A sender stopped (a reload) while it stores a transaction: the write is not
    cancelled half-way (SQLite's shared writer would stay inside it), and ``stop``
    returns once it is stored."""
    gate = asyncio.Event()
    store = GatedStore(gate=gate)
    r = rig(store)
    offer(r.sender, range(1, 3))
    r.sender.start()
    await asyncio.wait_for(store.entered.wait(), 5)
    stopping = asyncio.ensure_future(r.sender.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    gate.set()
    await asyncio.wait_for(stopping, 5)
    assert store.pending is not None and store.pending.txn_id == 1
    assert r.target.attempts == []


async def test_a_state_group_that_cannot_be_read_does_not_hold_the_catch_up_back() -> None:
    """Catching up, an event whose state cannot be read is decided with the room's
    members now; the events after it still go out."""

    class Unreadable(FakeInterest):
        async def wanted_at(
            self,
            appservices: Sequence[ApplicationService],
            event: EventFacts,
            state_group: int,
            new_group: NewStateGroup | None = None,
        ) -> list[ApplicationService]:
            if event.sender == "@alice:localhost" and state_group == 1:
                raise KeyError(state_group)
            return await super().wanted_at(appservices, event, state_group, new_group)

    store = FakeStore()
    store.add_events(range(1, 4))
    target, extras = FakeAppService(), FakeExtras()
    deps = replace_interest(deps_for(store, extras, target), Unreadable())
    progress = AppServiceProgress(0, None, 0, None, None)
    r = Rig(store, extras, target, AppServiceSender(appservice(), progress, 3, deps))
    r.sender.start()
    try:
        await r.settle()
    finally:
        await r.sender.stop()
    assert r.target.delivered() == ["$e1", "$e2", "$e3"]
