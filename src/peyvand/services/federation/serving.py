"""Reads other servers make of a room (Server-Server API): ``/event``, ``/state``,
``/state_ids``, ``/event_auth``, ``/get_missing_events`` and ``/backfill``. Events purged
here are served as their redacted PDUs, so peers keep a whole DAG."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu, StateKey
from peyvand.services.federation.federation_pdus import federation_pdu
from peyvand.services.federation.room_access import RoomAccess
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, JsonDict, RoomID, ServerName

_MAX_MISSING_EVENTS = 20
_MAX_BACKFILL = 100


class FederationReads:
    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        access: RoomAccess,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._state = state
        self._access = access
        self._clock = clock

    async def get_event(self, origin: ServerName, event_id: EventID) -> JsonDict:
        """GET /event/{eventId}: a transaction holding the one PDU."""
        pdus = await self._state.get_pdus([event_id])
        pdu = pdus.get(event_id)
        if pdu is None:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown event")
        snapshot = await self._access.room(pdu.room_id, origin)
        await self._access.require_server_in_room(origin, snapshot)
        stored = await self._state.get_event(event_id)
        redacted = stored is not None and stored.redacted_by is not None
        return {
            "origin": self._server_name,
            "origin_server_ts": int(self._clock() * 1000),
            "pdus": [federation_pdu(pdu, redacted)],
        }

    async def state_ids(self, origin: ServerName, room_id: RoomID, event_id: EventID) -> JsonDict:
        """GET /state_ids: the state before the event and its auth chain, as IDs (403
        while the room's state is partial here)."""
        snapshot = await self._access.room(room_id, origin)
        await self._access.require_server_in_room(origin, snapshot)
        self._access.require_full_state(room_id)
        state = await self.state_before(room_id, event_id)
        events = await self._state.get_pdus(state.values())
        chain = await self.auth_chain(e for p in events.values() for e in p.auth_event_ids)
        return {"pdu_ids": sorted(state.values()), "auth_chain_ids": sorted(chain)}

    async def state(self, origin: ServerName, room_id: RoomID, event_id: EventID) -> JsonDict:
        """GET /state: the state before the event and its auth chain, as PDUs (403 while
        the room's state is partial here)."""
        snapshot = await self._access.room(room_id, origin)
        await self._access.require_server_in_room(origin, snapshot)
        self._access.require_full_state(room_id)
        events, chain = await self.state_with_auth_chain(room_id, event_id)
        return {
            "pdus": [federation_pdu(p) for p in events.values()],
            "auth_chain": [federation_pdu(p) for p in chain.values()],
        }

    async def state_before(self, room_id: RoomID, event_id: EventID) -> dict[StateKey, EventID]:
        """The state before ``event_id``, a timeline event or one purged from it."""
        stored = (await self._state.get_dag_events([event_id])).get(event_id)
        if stored is None or stored.pdu.room_id != room_id:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown event")
        state = await self._state.state_ids_at_group(stored.state_group)
        if stored.pdu.is_state() and state.get(stored.pdu.state_tuple) == event_id:
            prevs = await self._state.get_dag_events(stored.pdu.prev_event_ids)
            if prevs:
                earlier = next(iter(prevs.values()))
                before = await self._state.state_ids_at_group(earlier.state_group)
                key = stored.pdu.state_tuple
                if key in before:
                    state[key] = before[key]
                else:
                    state.pop(key, None)
        return state

    async def event_auth(self, origin: ServerName, room_id: RoomID, event_id: EventID) -> JsonDict:
        """GET /event_auth: the event's full auth chain."""
        snapshot = await self._access.room(room_id, origin)
        await self._access.require_server_in_room(origin, snapshot)
        pdus = await self._state.get_pdus([event_id])
        if event_id not in pdus or pdus[event_id].room_id != room_id:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown event")
        chain = await self.auth_chain(pdus[event_id].auth_event_ids)
        return {"auth_chain": [federation_pdu(p) for p in chain.values()]}

    async def get_missing_events(
        self,
        origin: ServerName,
        room_id: RoomID,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> JsonDict:
        """POST /get_missing_events: events between ``earliest`` and ``latest``, walking
        prev_events back from ``latest`` (breadth first), oldest first. Events purged
        here are part of the walk, as their redacted PDUs."""
        snapshot = await self._access.room(room_id, origin)
        await self._access.require_server_in_room(origin, snapshot)
        limit = max(0, min(limit, _MAX_MISSING_EVENTS))
        seen = set(earliest) | set(latest)
        found: dict[EventID, StoredEvent] = {}
        frontier = [EventID(e) for e in latest]
        while frontier and len(found) < limit:
            events = {
                e: stored
                for e, stored in (await self._state.get_dag_events(frontier)).items()
                if stored.pdu.room_id == room_id
            }
            frontier = []
            for stored in events.values():
                for prev in stored.pdu.prev_event_ids:
                    if prev in seen:
                        continue
                    seen.add(prev)
                    frontier.append(prev)
            prev_events = await self._state.get_dag_events(frontier)
            for prev_id, stored in prev_events.items():
                if stored.pdu.room_id != room_id:
                    continue
                if stored.pdu.depth >= min_depth and len(found) < limit:
                    found[prev_id] = stored
            frontier = [e for e in frontier if e in found]
        ordered = sorted(found.values(), key=lambda s: (s.pdu.depth, s.pdu.event_id))
        return {"events": [federation_pdu(s.pdu, s.redacted_by is not None) for s in ordered]}

    async def backfill(
        self, origin: ServerName, room_id: RoomID, starting: Sequence[str], limit: int
    ) -> JsonDict:
        """GET /backfill: up to ``limit`` events before and including ``starting``
        (those purged here as their redacted PDUs)."""
        snapshot = await self._access.room(room_id, origin)
        await self._access.require_server_in_room(origin, snapshot)
        limit = max(0, min(limit, _MAX_BACKFILL))
        found: dict[EventID, StoredEvent] = {}
        frontier = [EventID(e) for e in starting]
        while frontier and len(found) < limit:
            events = await self._state.get_dag_events(frontier)
            frontier = []
            for event_id, stored in sorted(events.items(), key=lambda item: -item[1].pdu.depth):
                if event_id in found or len(found) >= limit or stored.pdu.room_id != room_id:
                    continue
                found[event_id] = stored
                frontier.extend(p for p in stored.pdu.prev_event_ids if p not in found)
        return {
            "origin": self._server_name,
            "origin_server_ts": int(self._clock() * 1000),
            "pdus": [federation_pdu(s.pdu, s.redacted_by is not None) for s in found.values()],
        }

    async def state_with_auth_chain(
        self, room_id: RoomID, event_id: EventID
    ) -> tuple[dict[EventID, Pdu], dict[EventID, Pdu]]:
        """The state before the event and that state's auth chain, as served (/state,
        send_join)."""
        state = await self.state_before(room_id, event_id)
        events = await self._state.get_pdus(state.values(), as_served=True)
        chain = await self.auth_chain(e for p in events.values() for e in p.auth_event_ids)
        return events, chain

    async def auth_chain(self, seeds: Iterable[EventID]) -> dict[EventID, Pdu]:
        """The events ``seeds`` name and all their auth events, transitively."""
        found: dict[EventID, Pdu] = {}
        frontier = set(seeds)
        while frontier:
            loaded = await self._state.get_pdus(frontier, as_served=True)
            found.update(loaded)
            frontier = {a for p in loaded.values() for a in p.auth_event_ids if a not in found}
        return found
