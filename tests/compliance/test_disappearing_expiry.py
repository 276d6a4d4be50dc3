"""Which events a room's disappearing-message timer gives an expiry (``DisappearingMessages
.prepare``, the EventWriter pre-commit hook), over a fake room state and store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from peyvand.compliance.disappearing import DISAPPEARING_EVENT, DisappearingMessages
from peyvand.compliance.purge import HistoryPurger
from peyvand.config.model import DisappearingConfig
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.database import Connection
from peyvand.storage.models import EventToPersist, StateGroupRow
from peyvand.storage.purge import PurgeStore
from peyvand.types import EventID, JsonDict, RoomID

ROOM = RoomID("!room:localhost")
VERSION = KNOWN_ROOM_VERSIONS["11"]
TIMER_SET_TS = 1_000_000
TIMER_MS = 60_000
# "Now" for the service: well after every timestamp the tests use, unless they say so.
NOW_MS = 10 * TIMER_SET_TS


def _pdu(event_id: str, ts: int, content: JsonDict, state_key: str | None = None) -> Pdu:
    data: JsonDict = {
        "type": DISAPPEARING_EVENT if state_key is not None else "m.room.message",
        "room_id": ROOM,
        "sender": "@alice:localhost",
        "origin_server_ts": ts,
        "content": content,
    }
    if state_key is not None:
        data["state_key"] = state_key
    return Pdu(data, EventID(event_id), VERSION)


def _persist(pdu: Pdu, stream_ordering: int, state_group: int = 1) -> EventToPersist:
    return EventToPersist(
        pdu=pdu,
        stream_ordering=stream_ordering,
        state_group=state_group,
        new_state_group=None,
        txn=None,
        relates_to=None,
        rel_type=None,
        new_extremities=(),
    )


_KEY = (DISAPPEARING_EVENT, "")


@dataclass
class _FakeState:
    """Room state per state group (group 1 unless a test says otherwise)."""

    snapshot: RoomSnapshot
    pdus: dict[EventID, Pdu] = field(default_factory=dict)
    groups: dict[int, dict[StateKey, EventID]] = field(default_factory=dict)
    redacted: set[EventID] = field(default_factory=set)

    async def get_room(self, room_id: RoomID) -> RoomSnapshot | None:
        return self.snapshot if room_id == ROOM else None

    async def get_pdus(self, event_ids: Iterable[EventID]) -> dict[EventID, Pdu]:
        return {e: self.pdus[e] for e in event_ids if e in self.pdus}

    async def state_ids_at_group(
        self, group: int, keys: Sequence[StateKey]
    ) -> dict[StateKey, EventID]:
        state = self.groups.get(group, {})
        return {k: state[k] for k in keys if k in state}

    async def is_redacted(self, event_id: EventID) -> bool:
        return event_id in self.redacted

    def set_timer(self, event: Pdu, group: int = 1) -> None:
        self.snapshot.state[_KEY] = event.event_id
        self.groups.setdefault(group, {})[_KEY] = event.event_id
        self.pdus[event.event_id] = event


@dataclass
class _FakeStore:
    rows: list[tuple[EventID, str, int]] = field(default_factory=list)

    async def set_expiry(self, txn: Connection, rows: Sequence[tuple[EventID, str, int]]) -> None:
        self.rows.extend(rows)


def _service(config: DisappearingConfig | None = None) -> tuple[DisappearingMessages, Any, Any]:
    snapshot = RoomSnapshot(
        room_id=ROOM,
        room_version=VERSION,
        state={},
        memberships={},
        extremities=[],
        depth=1,
        state_group=StateGroupRow(1, ROOM, 1, None, None),
    )
    state, store = _FakeState(snapshot), _FakeStore()
    service = DisappearingMessages(
        config or DisappearingConfig(),
        cast(PurgeStore, store),
        cast(StateService, state),
        cast(HistoryPurger, None),
        clock=lambda: NOW_MS / 1000,
    )
    return service, state, store


async def _expiries(service: DisappearingMessages, store: Any, batch: list[EventToPersist]) -> Any:
    write = await service.prepare(batch)
    if write is None:
        return {}
    await write(cast(Connection, None))
    found = {event_id: expires for event_id, _, expires in store.rows}
    store.rows.clear()
    return found


async def test_only_messages_of_rooms_with_a_timer_expire() -> None:
    service, state, store = _service()
    before = _persist(_pdu("$before", TIMER_SET_TS - 5, {"body": "x"}), 1)
    assert await _expiries(service, store, [before]) == {}

    state.set_timer(_pdu("$timer", TIMER_SET_TS, {"timer_ms": TIMER_MS}, state_key=""))
    live = _persist(_pdu("$live", TIMER_SET_TS + 10, {"body": "x"}), 2)
    # A live event counts whatever its clock says (a remote server's may lag).
    lagging = _persist(_pdu("$lagging", TIMER_SET_TS - 10, {"body": "x"}), 3)
    state_event = _persist(_pdu("$state", TIMER_SET_TS + 20, {}, state_key=""), 4)
    assert await _expiries(service, store, [live, lagging, state_event]) == {
        "$live": TIMER_SET_TS + 10 + TIMER_MS,
        "$lagging": TIMER_SET_TS - 10 + TIMER_MS,
    }


async def test_backfilled_history_from_before_the_timer_keeps_no_expiry() -> None:
    service, state, store = _service()
    state.set_timer(_pdu("$timer", TIMER_SET_TS, {"timer_ms": TIMER_MS}, state_key=""))
    older = _persist(_pdu("$older", TIMER_SET_TS - 1, {"body": "x"}), -7)
    newer = _persist(_pdu("$newer", TIMER_SET_TS + 1, {"body": "x"}), -6)
    assert await _expiries(service, store, [older, newer]) == {
        "$newer": TIMER_SET_TS + 1 + TIMER_MS
    }


async def test_timers_are_clamped_and_bad_ones_are_off() -> None:
    config = DisappearingConfig(min_timer=30_000, max_timer=120_000)
    service, state, store = _service(config)
    message = _persist(_pdu("$m1", TIMER_SET_TS + 1, {"body": "x"}), 1)
    cases: list[tuple[JsonDict, int | None]] = [
        ({"timer_ms": 1}, 30_000),
        ({"timer_ms": 10**12}, 120_000),
        ({"timer_ms": "60000"}, None),
        ({"timer_ms": 0}, None),
        ({}, None),
    ]
    for content, expected in cases:
        state.set_timer(_pdu(f"$timer-{content}", TIMER_SET_TS, content, state_key=""))
        found = await _expiries(service, store, [message])
        assert found == ({} if expected is None else {"$m1": TIMER_SET_TS + 1 + expected})
        assert await service.room_timer(ROOM) == expected


async def test_nothing_expires_when_disabled() -> None:
    service, state, _ = _service(DisappearingConfig(enabled=False))
    state.set_timer(_pdu("$timer", TIMER_SET_TS, {"timer_ms": TIMER_MS}, state_key=""))
    message = _persist(_pdu("$m", TIMER_SET_TS + 1, {"body": "x"}), 1)
    assert await service.prepare([message]) is None


async def test_the_timer_is_the_one_in_state_at_each_event() -> None:
    """A batch holding messages, the timer turned off, then more messages: those before
    keep the timer they were sent under (their state group's), those after have none."""
    service, state, store = _service()
    state.set_timer(_pdu("$timer", TIMER_SET_TS, {"timer_ms": TIMER_MS}, state_key=""))
    off = _pdu("$off", TIMER_SET_TS + 5, {}, state_key="")
    state.groups[2] = {_KEY: off.event_id}
    state.snapshot.state[_KEY] = off.event_id  # the snapshot is ahead of the batch
    before = _persist(_pdu("$before", TIMER_SET_TS + 1, {"body": "x"}), 1, state_group=1)
    after = _persist(_pdu("$after", TIMER_SET_TS + 9, {"body": "x"}), 3, state_group=2)
    batch = [before, _persist(off, 2, state_group=2), after]
    assert await _expiries(service, store, batch) == {"$before": TIMER_SET_TS + 1 + TIMER_MS}


async def test_a_claimed_future_time_does_not_delay_expiry() -> None:
    service, state, store = _service()
    state.set_timer(_pdu("$timer", TIMER_SET_TS, {"timer_ms": TIMER_MS}, state_key=""))
    future = _persist(_pdu("$future", 2**53 - 1, {"body": "x"}), 1)
    assert await _expiries(service, store, [future]) == {"$future": NOW_MS + TIMER_MS}


async def test_a_redacted_timer_sets_none() -> None:
    service, state, store = _service()
    state.set_timer(_pdu("$timer", TIMER_SET_TS, {"timer_ms": TIMER_MS}, state_key=""))
    state.redacted.add(EventID("$timer"))
    message = _persist(_pdu("$m", TIMER_SET_TS + 1, {"body": "x"}), 1)
    assert await _expiries(service, store, [message]) == {}
    assert await service.room_timer(ROOM) is None
