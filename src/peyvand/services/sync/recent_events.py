"""The newest events of recently active rooms, kept as committed (issue 15, "hot room").

A committed batch in a room of many members wakes every member's long-poll, and each
woken ``/sync`` reads the same few new events (and the event before its token, for the
state at a gap). This keeps each active room's newest events in memory, fed by the
dispatcher right after the commit and before any woken sync runs, so those reads are
answered here: one read of a batch per wake-up instead of one per woken sync, and no
parsing of the same PDU JSON hundreds of times.

For each room the events are held in stream order and are *complete from the oldest
held*: every event of the room at or after it is held (a room's events are committed in
the order of their positions; a late one that is still in the held range is inserted in
order, an older one is left to storage). A read is answered only when that makes the
answer exactly what ``EventStore.get_room_events`` would return; otherwise it is None
and the caller reads storage. Events change after their commit only by a redaction
(applied here by the rule storage applies) or a purge or content deletion, which bumps
``StateService.forget_epoch``: then everything held is dropped.

Each room also keeps the state groups of its events since its tail started, their own
and the room's current group once each was applied (``StoredEvent.current_group``: at a
fork, the resolved one), one entry per change (a burst of messages is one): a woken
sync whose token is older than the held events still finds the room's state group at
its token here (``state_group_at``), to tell whether any state changed across its gap.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import replace

from peyvand.events.redaction import redaction_takes_effect
from peyvand.lru import LRU
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import EventToPersist, StoredEvent, stored_event
from peyvand.types import EventID, RoomID

# Rooms held, and events per room. A woken long-poll reads the events after its token,
# so a room must hold the bursts that can land between two polls: in the hot room (16
# senders, 50 long-polls) 32 answer as many reads as 64 did (99%; 16: 93%, 8: 57%) for the
# same CPU, and each event held costs about 1.5 KiB (bench.memory peak 86.5 MiB, not 90).
# The rooms active right now, at most 1,024 events (about 1.5 MiB): 256 rooms held the
# standard benchmark's 100 filled rooms whole (bench.memory peak 80.1 MiB; 75.3 with 32).
ROOMS = 32
EVENTS_PER_ROOM = 32
# State group changes remembered per room (a few ints each; only state events and forks
# change a room's group).
GROUP_CHANGES = 64


class _RoomTail:
    """One room's newest events, oldest first; every event of the room at or after
    ``events[0]`` is among them. ``group_starts[i]`` is the position from which the
    state groups of the room's last event at or before a position, its own and the
    room's current one after it (``_groups``), are ``groups[i]``; they too are complete
    from ``group_starts[0]``."""

    __slots__ = ("events", "group_starts", "groups", "positions")

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.positions: list[int] = []
        self.group_starts: list[int] = []
        self.groups: list[tuple[int, int]] = []

    def add(self, event: StoredEvent) -> None:
        position = event.stream_ordering
        positions = self.positions
        if positions and position < positions[-1]:
            # A late event: the groups known before the newest may have changed.
            self.group_starts = [positions[-1]]
            self.groups = [_groups(self.events[-1])]
            if position < positions[0]:
                return  # older than what is held: storage has it
        elif not self.groups or self.groups[-1] != _groups(event):
            self.group_starts.append(position)
            self.groups.append(_groups(event))
            if len(self.groups) > GROUP_CHANGES:
                del self.group_starts[0]
                del self.groups[0]
        at = bisect.bisect_left(positions, position)
        if at < len(positions) and positions[at] == position:
            return
        positions.insert(at, position)
        self.events.insert(at, event)
        if len(self.events) > EVENTS_PER_ROOM:
            del positions[0]
            del self.events[0]

    def state_group_at(self, position: int, resolved: bool) -> int | None:
        """The state group of the last event at or before ``position``, or with
        ``resolved`` the room's current one after it; None when that is before what is
        known."""
        at = bisect.bisect_right(self.group_starts, position)
        if not at:
            return None
        own, current = self.groups[at - 1]
        return current if resolved else own

    def redact(self, redaction: EventToPersist, target: EventID) -> None:
        """Mark ``target`` redacted if it is held and ``redaction`` takes effect on it,
        as the commit marked it in storage (``storage.events``)."""
        for at, event in enumerate(self.events):
            if event.pdu.event_id != target:
                continue
            pdu = event.pdu
            if event.redacted_by is None and redaction_takes_effect(
                redaction.pdu,
                by_power=redaction.redaction_by_power,
                original_room_id=pdu.room_id,
                original_sender=pdu.sender,
                original_type=pdu.type,
            ):
                self.events[at] = replace(event, redacted_by=redaction.pdu.event_id)
            return


def _groups(event: StoredEvent) -> tuple[int, int]:
    """The event's own state group and the room's current one after it."""
    return (event.state_group, event.current_group)


class RecentEvents:
    def __init__(self, state: StateService) -> None:
        self._state = state
        self._epoch = state.forget_epoch
        self._rooms: LRU[RoomID, _RoomTail] = LRU(ROOMS)

    def _current(self) -> LRU[RoomID, _RoomTail]:
        """The held rooms, emptied first if stored events changed since they were held."""
        if self._epoch != self._state.forget_epoch:
            self._epoch = self._state.forget_epoch
            self._rooms = LRU(ROOMS)
        return self._rooms

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """A dispatcher listener: hold the committed ``batch`` (runs before any sync it
        woke)."""
        rooms = self._current()
        for persisted in batch:
            if persisted.stream_ordering <= 0:
                continue  # backfilled history, older than every held event
            room_id = persisted.pdu.room_id
            tail = rooms.get(room_id)
            if tail is None:
                tail = _RoomTail()
                rooms.put(room_id, tail)
            tail.add(stored_event(persisted))
        for persisted in batch:
            pdu = persisted.pdu
            if pdu.type == "m.room.redaction" and (target := pdu.redacts) is not None:
                tail = rooms.peek(pdu.room_id)
                if tail is not None:
                    tail.redact(persisted, target)

    def state_group_at(
        self, room_id: RoomID, position: int, *, resolved: bool = False
    ) -> int | None:
        """The room's state group at stream ``position`` (that of its last event at or
        before it; with ``resolved``, the room's current group after it, its
        ``current_group``), as ``EventStore.get_room_events`` would tell; None when what
        is held cannot tell (the caller reads storage)."""
        tail = self._current().get(room_id)
        return tail.state_group_at(position, resolved) if tail is not None else None

    def page(
        self,
        room_id: RoomID,
        *,
        after: int | None,
        before: int | None,
        limit: int,
        newest_first: bool,
    ) -> list[StoredEvent] | None:
        """``EventStore.get_room_events`` from memory: the room's events with ``after <
        stream_ordering <= before``, at most ``limit``, in the order asked; None when
        what is held cannot tell (the caller reads storage).

        Answered when the whole range is held, or, newest first, when at least ``limit``
        of its newest events are (the held events being complete from the oldest)."""
        tail = self._current().get(room_id)
        if tail is None or not tail.positions:
            return None
        positions = tail.positions
        low = 0 if after is None else bisect.bisect_right(positions, after)
        high = len(positions) if before is None else bisect.bisect_right(positions, before)
        whole = after is not None and after >= positions[0] - 1
        if newest_first:
            if not whole and high - low < limit:
                return None
            return tail.events[max(low, high - limit) : high][::-1]
        if not whole:
            return None
        return tail.events[low : min(high, low + limit)]
