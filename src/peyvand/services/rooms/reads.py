"""Reading rooms: single events, /messages, /context, state and members, each filtered by
history visibility and serialised in the client format with per-request ``unsigned``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import StateKey
from peyvand.events.redaction import redact_pdu
from peyvand.events.serialize import client_event
from peyvand.services.accounts.requester import Requester
from peyvand.services.rooms.aggregations import BundledAggregations, Render
from peyvand.services.rooms.replaced_state import ReplacedState
from peyvand.services.rooms.visibility import VisibilityService
from peyvand.services.sync.filtering import EventFilter
from peyvand.services.sync.recent_events import RecentEvents
from peyvand.services.sync.streams import StreamToken, parse_position_number
from peyvand.services.timeline.event_creation import client_txn_id
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.events import EventStore
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, JsonDict, RoomID, UserID

MAX_PAGE = 1000
# A scan reads at most this many batches looking for events that pass the filter.
_MAX_SCAN_ROUNDS = 8


def parse_position(token: str) -> int:
    """A /messages token (``t<pos>``) or a sync ``next_batch`` (``s...``) as an event position."""
    if token.startswith("t"):
        # Backfilled history has negative positions ("t-12").
        negative = token.startswith("t-")
        try:
            number = parse_position_number(token[2:] if negative else token[1:])
        except ValueError:
            pass
        else:
            return -number if negative else number
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid pagination token: {token!r}")
    return StreamToken.parse(token).events


def position_token(position: int) -> str:
    return f"t{position}"


Backfill = Callable[[RoomID, int], Awaitable[bool]]
"""(room, how many) -> whether older events were fetched from other servers."""


async def no_backfill(room_id: RoomID, limit: int) -> bool:
    """``Backfill`` where federation is off: no other server to ask."""
    return False


@dataclass(frozen=True, slots=True)
class Scan:
    """Events found by ``RoomEventsService.scan``, in scan order."""

    events: list[StoredEvent]
    # Where a further scan in the same direction continues; None when nothing is left.
    resume: int | None


@dataclass(frozen=True, slots=True)
class Page:
    chunk: list[JsonDict]
    start: str
    end: str | None
    state: list[JsonDict]


class RoomEventsService:
    def __init__(
        self,
        store: EventStore,
        state: StateService,
        visibility: VisibilityService,
        current_position: Callable[[], int],
        backfill: Backfill,
        *,
        recent: RecentEvents,
        replaced: ReplacedState,
        aggregations: BundledAggregations,
        wait_for_full_state: Callable[[RoomID], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``backfill`` pulls history from other servers when a room's local history
        runs out; ``wait_for_full_state`` returns once a room joined with partial state
        (MSC3706) has all its members (the member lists wait for it, as in Synapse);
        ``recent`` answers reads of rooms' newest events from memory; ``replaced``
        gives state events' ``prev_content``; ``aggregations`` their bundled
        aggregations."""
        self._store = store
        self._aggregations = aggregations
        self._recent = recent
        self._replaced = replaced
        self._state = state
        self._visibility = visibility
        self._current_position = current_position
        self._backfill = backfill
        self._wait_for_full_state = wait_for_full_state
        self._clock = clock

    # -- serialisation -------------------------------------------------------------------

    async def serialize(
        self,
        events: Sequence[StoredEvent],
        requester: Requester | None,
        *,
        include_room_id: bool = True,
        federation_format: bool = False,
        bundle: Sequence[StoredEvent] | None = None,
    ) -> list[JsonDict]:
        """Client events with ``unsigned``: age, transaction_id, redacted_because, and
        for state events replaces_state, prev_content and prev_sender, and bundled
        aggregations (``m.relations``: per requester, see ``services.rooms.aggregations``)
        of the events of ``bundle`` (None: of all). With ``federation_format`` (a
        filter's ``event_format``), the PDUs themselves, with their ``event_id`` and that
        ``unsigned``."""
        now = int(self._clock() * 1000)
        redactions = await self._state.get_events(
            e.redacted_by for e in events if e.redacted_by is not None
        )
        replaced = await self._replaced.unsigned(events)
        relations = await self._aggregations.relations(
            events if bundle is None else bundle,
            requester.user_id if requester is not None else None,
            Render(now, include_room_id, federation_format),
        )
        out = []
        for event in events:
            pdu = event.pdu
            unsigned: JsonDict = {
                "age": max(0, now - pdu.origin_server_ts),
                **replaced.get(pdu.event_id, {}),
            }
            if pdu.event_id in relations:
                unsigned["m.relations"] = relations[pdu.event_id]
            if (
                requester is not None
                and event.txn is not None
                and event.txn[0] == requester.device_id
                and pdu.sender == requester.user_id
            ):
                # Only to the device that sent it (Client-Server API, "Transaction IDs").
                unsigned["transaction_id"] = client_txn_id(
                    event.txn[1], pdu.room_id, pdu.type, pdu.redacts
                )
            if event.redacted_by is not None:
                # Redacted whether or not the redaction is still stored (retention or a
                # disappearing timer may have purged it since).
                pdu = redact_pdu(pdu)
                if event.redacted_by in redactions:
                    because = redactions[event.redacted_by].pdu
                    unsigned["redacted_because"] = client_event(because, include_room_id=True)
            if federation_format:
                out.append({**pdu.data, "event_id": pdu.event_id, "unsigned": unsigned})
            else:
                out.append(client_event(pdu, unsigned=unsigned, include_room_id=include_room_id))
        return out

    # -- access --------------------------------------------------------------------------

    async def _membership(self, room_id: RoomID, user_id: UserID) -> str | None:
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
        return snapshot.memberships.get(user_id)

    async def _visible(
        self, user_id: UserID, room_id: RoomID, events: Sequence[StoredEvent]
    ) -> list[StoredEvent]:
        joined = await self._membership(room_id, user_id) == "join"
        return await self._visibility.filter_events(user_id, events, currently_joined=joined)

    async def _require_ever_member(self, room_id: RoomID, user_id: UserID) -> str | None:
        """The user's membership; None for a non-member of a world-readable room, whom
        "Room History Visibility" lets read it; 403 for other non-members."""
        membership = await self._membership(room_id, user_id)
        if membership is None and not await self.world_readable(room_id):
            raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
        return membership

    async def world_readable(self, room_id: RoomID) -> bool:
        """Whether the room's current ``m.room.history_visibility`` is world_readable."""
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            return False
        events = await self._state.get_state_events(
            snapshot.state, [("m.room.history_visibility", "")]
        )
        event = events.get(("m.room.history_visibility", ""))
        return event is not None and event.content.get("history_visibility") == "world_readable"

    async def get_event(self, requester: Requester, room_id: RoomID, event_id: EventID) -> JsonDict:
        """GET /rooms/{roomId}/event/{eventId}; 404 when unknown or not visible (the spec
        answers a requester who may not read the room with 404 too, never 403)."""
        try:
            await self._require_ever_member(room_id, requester.user_id)
        except MatrixError as exc:
            raise MatrixError(Errcode.NOT_FOUND, "Event not found") from exc
        event = await self._state.get_event(event_id)
        if event is None or event.pdu.room_id != room_id:
            raise MatrixError(Errcode.NOT_FOUND, "Event not found")
        if not await self._visible(requester.user_id, room_id, [event]):
            raise MatrixError(Errcode.NOT_FOUND, "Event not found")
        return (await self.serialize([event], requester))[0]

    # -- pagination ----------------------------------------------------------------------

    async def _page(
        self,
        room_id: RoomID,
        *,
        after: int | None,
        before: int | None,
        newest_first: bool,
        limit: int,
    ) -> list[StoredEvent]:
        held = self._recent.page(
            room_id, after=after, before=before, limit=limit, newest_first=newest_first
        )
        if held is not None:
            return held
        epoch = self._state.forget_epoch
        events = await self._store.get_room_events(
            room_id, after=after, before=before, limit=limit, newest_first=newest_first
        )
        self._state.cache_events(events, epoch)
        return events

    async def last_event(self, room_id: RoomID, position: int) -> StoredEvent | None:
        """The room's newest event at or before stream ``position`` (None: none), whose
        state group is the room's state there."""
        found = await self._page(room_id, after=None, before=position, newest_first=True, limit=1)
        return found[0] if found else None

    async def state_group_at(
        self, room_id: RoomID, position: int, *, resolved: bool = False
    ) -> int | None:
        """The room's state group at stream ``position``: that of its newest event at or
        before it (None: before its first event), as Synapse's ``get_state_at`` reads
        it; with ``resolved``, the room's current group once that event was applied
        (``StoredEvent.current_group``: at a fork, the resolution over every forward
        extremity, not that event's side), as its current-state deltas tell. From the
        recent events when they tell."""
        held = self._recent.state_group_at(room_id, position, resolved=resolved)
        if held is not None:
            return held
        last = await self.last_event(room_id, position)
        if last is None:
            return None
        return last.current_group if resolved else last.state_group

    async def scan(
        self,
        user_id: UserID,
        room_id: RoomID,
        *,
        after: int | None,
        before: int | None,
        newest_first: bool,
        limit: int,
        event_filter: EventFilter | None,
        current_state_visible: bool = False,
    ) -> Scan:
        """Up to ``limit`` events of ``(after, before]`` that ``user_id`` may see and that
        match ``event_filter``, from the newest (or oldest) end.

        Visibility and the filter apply before the limit, so a filtered page is full
        whenever enough matching events exist; ``resume`` tells whether more do. With
        ``current_state_visible`` (a joined member's sync timeline), state events that
        are still the room's current state pass whatever the history visibility, as in
        Synapse: a member can read current state anyway.
        """
        joined = await self._membership(room_id, user_id) == "join"
        snapshot = await self._state.get_room(room_id) if current_state_visible else None
        if event_filter is not None and event_filter.matches_all:
            # Read only what is kept (limit + 1): a woken sync's page then comes from
            # the recent events, not storage (issue 15, "hot room").
            event_filter = None
        found: list[StoredEvent] = []
        low, high = after, before
        for _ in range(_MAX_SCAN_ROUNDS):
            wanted = limit - len(found)
            size = min(max(2 * wanted, 50), MAX_PAGE) if event_filter else wanted + 1
            raw = await self._page(
                room_id, after=low, before=high, newest_first=newest_first, limit=size
            )
            visible = {
                e.pdu.event_id
                for e in await self._visibility.filter_events(user_id, raw, currently_joined=joined)
            }
            if snapshot is not None:
                visible.update(
                    e.pdu.event_id
                    for e in raw
                    if e.pdu.is_state()
                    and snapshot.state.get((e.pdu.type, e.pdu.state_key or "")) == e.pdu.event_id
                )
            for event in raw:
                if event.pdu.event_id not in visible or (
                    event_filter is not None and not event_filter.matches(event.pdu.data)
                ):
                    continue
                if len(found) == limit:
                    return Scan(found, _resume_before(event, newest_first))
                found.append(event)
            if len(raw) < size:
                return Scan(found, None)
            if newest_first:
                high = raw[-1].stream_ordering - 1
            else:
                low = raw[-1].stream_ordering
        cursor = high if newest_first else low
        return Scan(found, cursor)

    async def messages(
        self,
        requester: Requester,
        room_id: RoomID,
        *,
        from_token: str | None,
        to_token: str | None,
        backwards: bool,
        limit: int,
        event_filter: EventFilter | None,
    ) -> Page:
        """GET /rooms/{roomId}/messages (Client-Server API, "Syncing": "Getting events")."""
        membership = await self._require_ever_member(room_id, requester.user_id)
        limit = max(1, min(limit, MAX_PAGE))
        start = (
            parse_position(from_token)
            if from_token
            else (self._current_position() if backwards else 0)
        )
        bound = parse_position(to_token) if to_token else None
        # A user who left sees nothing after leaving.
        if membership in ("leave", "ban"):
            left_at = await self._left_at(room_id, requester.user_id)
            if backwards:
                start = min(start, left_at)
            else:
                bound = left_at if bound is None else min(bound, left_at)
        found = await self.scan(
            requester.user_id,
            room_id,
            after=bound if backwards else start,
            before=start if backwards else bound,
            newest_first=backwards,
            limit=limit,
            event_filter=event_filter,
        )
        if (
            backwards
            and found.resume is None
            and bound is None
            and await self._backfill(room_id, limit)
        ):
            # Local history ran out and older events arrived from other servers.
            found = await self.scan(
                requester.user_id,
                room_id,
                after=None,
                before=start,
                newest_first=True,
                limit=limit,
                event_filter=event_filter,
            )
        chunk = await self.serialize(found.events, requester)
        state: list[JsonDict] = []
        if event_filter is not None and event_filter.lazy_load_members and found.events:
            state = await self._lazy_members(requester, room_id, found.events)
        end = found.resume
        if end is None and not backwards and found.events:
            # Forwards, newer events may still come: continue after the last one (as
            # Synapse, which answers ``end`` whenever the chunk has events).
            end = found.events[-1].stream_ordering
        return Page(
            chunk=chunk,
            start=from_token or position_token(start),
            end=position_token(end) if end is not None else None,
            state=state,
        )

    async def _left_at(self, room_id: RoomID, user_id: UserID) -> int:
        snapshot = await self._state.get_room(room_id)
        assert snapshot is not None
        member_id = snapshot.state.get(("m.room.member", user_id))
        event = await self._state.get_event(member_id) if member_id else None
        return event.stream_ordering if event is not None else 0

    async def _lazy_members(
        self, requester: Requester, room_id: RoomID, events: Sequence[StoredEvent]
    ) -> list[JsonDict]:
        """Member events of the senders of ``events``, at the newest of them."""
        senders = sorted({e.pdu.sender for e in events})
        newest = max(events, key=lambda e: e.stream_ordering)
        keys: list[StateKey] = [("m.room.member", s) for s in senders]
        ids = await self._state.state_ids_at_group(newest.state_group, keys)
        found = await self._state.get_state_events_by_id(ids.values())
        return await self.serialize([found[i] for i in ids.values() if i in found], requester)

    async def context(
        self,
        requester: Requester,
        room_id: RoomID,
        event_id: EventID,
        *,
        limit: int,
        event_filter: EventFilter | None,
    ) -> JsonDict:
        """GET /rooms/{roomId}/context/{eventId}: the event, events around it, its state."""
        await self._require_ever_member(room_id, requester.user_id)
        event = await self._state.get_event(event_id)
        if event is None or event.pdu.room_id != room_id:
            raise MatrixError(Errcode.NOT_FOUND, "Event not found")
        if not await self._visible(requester.user_id, room_id, [event]):
            raise MatrixError(Errcode.NOT_FOUND, "Event not found")
        limit = max(0, min(limit, MAX_PAGE))
        half_before = limit // 2
        half_after = limit - half_before
        user_id = requester.user_id
        before_scan = (
            await self.scan(
                user_id,
                room_id,
                after=None,
                before=event.stream_ordering - 1,
                newest_first=True,
                limit=half_before,
                event_filter=event_filter,
            )
            if half_before
            else Scan([], event.stream_ordering - 1)
        )
        after_scan = (
            await self.scan(
                user_id,
                room_id,
                after=event.stream_ordering,
                before=None,
                newest_first=False,
                limit=half_after,
                event_filter=event_filter,
            )
            if half_after
            else Scan([], event.stream_ordering)
        )
        before, after = before_scan.events, after_scan.events
        ser_before = await self.serialize(before, requester)
        ser_after = await self.serialize(after, requester)
        state_ids = await self._state.state_ids_at_group(event.state_group)
        if event_filter is not None and event_filter.lazy_load_members:
            senders = {e.pdu.sender for e in [*before, event, *after]}
            state_ids = {
                k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders
            }
        state_events = await self._state.get_state_events_by_id(state_ids.values())
        return {
            "event": (await self.serialize([event], requester))[0],
            "events_before": ser_before,
            "events_after": ser_after,
            "start": position_token(
                before[-1].stream_ordering - 1 if before else event.stream_ordering - 1
            ),
            "end": position_token(after[-1].stream_ordering if after else event.stream_ordering),
            "state": await self.serialize(list(state_events.values()), requester),
        }

    # -- state ---------------------------------------------------------------------------

    async def _full_state(self, room_id: RoomID) -> None:
        """Wait (bounded) until a room joined with partial state has all its members:
        what lists or looks up members needs them (as Synapse)."""
        if self._wait_for_full_state is not None:
            await self._wait_for_full_state(room_id)

    async def _visible_state_ids(
        self, requester: Requester, room_id: RoomID
    ) -> dict[StateKey, EventID]:
        """Current state (as committed: ``committed_room``) for members and readers of a
        world-readable room; the state at their leave for those who left other rooms."""
        snapshot = await self._state.committed_room(room_id)
        if snapshot is None:
            raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
        state = dict(snapshot.state)
        membership = snapshot.memberships.get(requester.user_id)
        if membership == "join" or await self.world_readable(room_id):
            return state
        if membership is None:
            raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
        member_id = state.get(("m.room.member", requester.user_id))
        member = await self._state.get_event(member_id) if member_id else None
        if member is None:
            raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
        if membership == "invite":
            raise MatrixError(Errcode.FORBIDDEN, "You are invited but not joined to this room")
        return await self._state.state_ids_at_group(member.state_group)

    async def get_state(self, requester: Requester, room_id: RoomID) -> list[JsonDict]:
        await self._full_state(room_id)
        ids = await self._visible_state_ids(requester, room_id)
        events = await self._state.get_state_events_by_id(ids.values())
        return await self.serialize([events[i] for i in ids.values() if i in events], requester)

    async def get_state_event(
        self, requester: Requester, room_id: RoomID, event_type: str, state_key: str
    ) -> StoredEvent:
        if event_type == "m.room.member":
            await self._full_state(room_id)
        ids = await self._visible_state_ids(requester, room_id)
        event_id = ids.get((event_type, state_key))
        found = await self._state.get_state_events_by_id([event_id] if event_id else [])
        event = found.get(event_id) if event_id else None
        if event is None:
            raise MatrixError(Errcode.NOT_FOUND, "Event not found")
        if event.redacted_by is not None:
            return replace(event, pdu=redact_pdu(event.pdu))
        return event

    async def members(
        self,
        requester: Requester,
        room_id: RoomID,
        *,
        membership: str | None,
        not_membership: str | None,
    ) -> list[JsonDict]:
        """GET /rooms/{roomId}/members."""
        await self._full_state(room_id)
        ids = await self._visible_state_ids(requester, room_id)
        member_ids = [v for k, v in ids.items() if k[0] == "m.room.member"]
        events = await self._state.get_state_events_by_id(member_ids)
        chosen = [
            e
            for e in events.values()
            if (membership is None or e.pdu.membership == membership)
            and (not_membership is None or e.pdu.membership != not_membership)
        ]
        return await self.serialize(chosen, requester)

    async def joined_members(self, requester: Requester, room_id: RoomID) -> JsonDict:
        """GET /rooms/{roomId}/joined_members: display names and avatars of joined users."""
        if await self._membership(room_id, requester.user_id) != "join":
            raise MatrixError(Errcode.FORBIDDEN, "You are not joined to this room")
        await self._full_state(room_id)
        snapshot = await self._state.committed_room(room_id)
        if snapshot is None or snapshot.memberships.get(requester.user_id) != "join":
            raise MatrixError(Errcode.FORBIDDEN, "You are not joined to this room")
        ids = [snapshot.state[("m.room.member", u)] for u in snapshot.joined_members()]
        events = await self._state.get_state_events_by_id(ids)
        joined: JsonDict = {}
        for event in events.values():
            content = event.pdu.content
            joined[event.pdu.state_key or ""] = {
                "display_name": content.get("displayname"),
                "avatar_url": content.get("avatar_url"),
            }
        return {"joined": joined}


def _resume_before(first_left: StoredEvent, newest_first: bool) -> int:
    """The position a scan in the same direction continues from to start at
    ``first_left`` (also when nothing was returned: a limit of 0)."""
    return first_left.stream_ordering if newest_first else first_left.stream_ordering - 1
