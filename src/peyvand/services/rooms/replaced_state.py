"""``unsigned.replaces_state``, ``prev_content`` and ``prev_sender`` of served state events
(Client-Server API, "Room event format": ``ClientEvent`` ``unsigned``).

The state event that a state event replaced is fixed once the event is stored: the
writer records it (``events.replaces_state``, migration 034) from the state before the
event it already holds (the room snapshot for a local event, the resolved state before a
received one). This service keeps that mapping for recently committed and served events
in memory; serving reads the replaced events in one batch through the state cache (which
holds state events), a redacted one in its redacted form. As in Synapse, none of this
depends on who reads (``prev_content`` is given whatever the reader's history
visibility), so one answer serves every reader. Backfilled history, events held outside
the timeline (the state a room had when this server joined it) and the first event of a
key replace nothing here and get none of the three.
"""

from __future__ import annotations

from collections.abc import Sequence

from peyvand.lru import LRU
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist, StoredEvent
from peyvand.types import EventID, JsonDict

# Event IDs whose replaced event is kept in memory (about 200 bytes each).
_CACHE_SIZE = 65_536


class ReplacedState:
    def __init__(self, store: EventStore, state: StateService) -> None:
        self._store = store
        self._state = state
        # state event ID -> (the event it replaced, or None); immutable once stored.
        self._replaced: LRU[EventID, tuple[EventID | None]] = LRU(_CACHE_SIZE)

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """Remember what each committed state event replaced (a dispatcher listener, run
        before the syncs that the batch woke serialise it)."""
        for persisted in batch:
            if persisted.pdu.is_state():
                self._replaced.put(persisted.pdu.event_id, (persisted.replaces_state,))

    async def unsigned(self, events: Sequence[StoredEvent]) -> dict[EventID, JsonDict]:
        """``replaces_state``, ``prev_content`` and ``prev_sender`` of each state event
        among ``events`` that replaced another (only ``replaces_state`` when the replaced
        event is not stored here). At most one query for the events whose mapping is not
        in memory, and one batch read of the replaced events."""
        replaced = await self._replaced_ids([e.pdu.event_id for e in events if e.pdu.is_state()])
        if not replaced:
            return {}
        previous = await self._state.get_pdus(replaced.values(), as_served=True)
        fields: dict[EventID, JsonDict] = {}
        for event_id, replaces in replaced.items():
            fields[event_id] = {"replaces_state": replaces}
            prev = previous.get(replaces)
            if prev is not None:
                fields[event_id]["prev_content"] = dict(prev.content)
                fields[event_id]["prev_sender"] = prev.sender
        return fields

    async def _replaced_ids(self, event_ids: Sequence[EventID]) -> dict[EventID, EventID]:
        """The state event each of ``event_ids`` replaced, for those that replaced one."""
        replaced: dict[EventID, EventID] = {}
        missing = []
        for event_id in event_ids:
            cached = self._replaced.get(event_id)
            if cached is None:
                missing.append(event_id)
            elif cached[0] is not None:
                replaced[event_id] = cached[0]
        if missing:
            loaded = await self._store.get_replaced_state(missing)
            for event_id in missing:
                # Not in the timeline: held outside it (replaces nothing here), or served
                # from the state cache before its commit, whose listener call (which may
                # have run during the read) has the last word.
                replaces = loaded.get(event_id)
                if self._replaced.peek(event_id) is None:
                    self._replaced.put(event_id, (replaces,))
                if replaces is not None:
                    replaced[event_id] = replaces
        return replaced
