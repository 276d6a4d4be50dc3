"""Listing an event's children (Client-Server API, "Relationships API":
``GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]``).

The parent must be an event of the room the requester may see, else 404 (as for
``/event``). Children are listed in stream order, only those the requester may see
(history visibility and ignored users apply before the limit, so a page is full whenever
enough such children exist), without redacted ones, and without the edits of a redacted
parent (they would leak its content). Tokens are ``/messages`` positions, so a
``/messages`` or ``/sync`` token works too. ``recurse`` (MSC3981, v1.10) follows
relations of relations, the filters applying at every level, ``RECURSION_DEPTH`` deep,
reading at most ``storage.relations.MAX_RECURSIVE_SCAN`` related events. ``limit`` is
held between 1 and ``MAX_LIMIT`` (Synapse caps it at 1,000 too; given 0 it fails with a
500 when there are children, here a page of one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.requester import Requester
from peyvand.services.rooms.reads import RoomEventsService, parse_position, position_token
from peyvand.services.rooms.visibility import VisibilityService
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import StoredEvent
from peyvand.storage.relations import ChildrenQuery, RelationStore
from peyvand.types import EventID, JsonDict, RoomID

DEFAULT_LIMIT = 5
MAX_LIMIT = 1000
# Levels of relations followed with ``recurse`` (the spec asks for at least 3).
RECURSION_DEPTH = 3
# A page reads at most this many batches looking for children the requester may see.
_MAX_SCAN_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class RelationsRequest:
    room_id: RoomID
    event_id: EventID
    rel_type: str | None = None
    event_type: str | None = None
    from_token: str | None = None
    to_token: str | None = None
    limit: int = DEFAULT_LIMIT
    backwards: bool = True
    recurse: bool = False


class RelationsService:
    def __init__(
        self,
        store: RelationStore,
        state: StateService,
        visibility: VisibilityService,
        room_events: RoomEventsService,
    ) -> None:
        self._store = store
        self._state = state
        self._visibility = visibility
        self._room_events = room_events

    async def relations(self, requester: Requester, request: RelationsRequest) -> JsonDict:
        """One page of the children of ``request.event_id``, served with their own
        bundled aggregations."""
        # At least one: a page of none would hand back its own token forever.
        limit = max(1, min(request.limit, MAX_LIMIT))
        start = parse_position(request.from_token) if request.from_token else None
        bound = parse_position(request.to_token) if request.to_token else None
        parent, joined = await self._visible_parent(requester, request.room_id, request.event_id)
        query = ChildrenQuery(
            parent_id=request.event_id,
            room_id=request.room_id,
            rel_type=request.rel_type,
            event_type=request.event_type,
            after=bound if request.backwards else start,
            before=start if request.backwards else bound,
            newest_first=request.backwards,
            depth=RECURSION_DEPTH if request.recurse else 1,
            without_edits=parent.redacted_by is not None,
        )
        found, resume = await self._scan(requester, query, limit, joined)
        answer: JsonDict = {"chunk": await self._room_events.serialize(found, requester)}
        if resume is not None:
            answer["next_batch"] = position_token(resume)
        if request.from_token:
            answer["prev_batch"] = request.from_token
        if request.recurse:
            answer["recursion_depth"] = RECURSION_DEPTH
        return answer

    async def _visible_parent(
        self, requester: Requester, room_id: RoomID, event_id: EventID
    ) -> tuple[StoredEvent, bool]:
        """The parent and whether the requester is joined; 404 when the room or event is
        unknown or the requester may not see it (the spec's one answer for both)."""
        not_found = MatrixError(Errcode.NOT_FOUND, "Event not found")
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            raise not_found
        membership = snapshot.memberships.get(requester.user_id)
        if membership is None and not await self._room_events.world_readable(room_id):
            raise not_found
        parent = await self._state.get_event(event_id)
        if parent is None or parent.pdu.room_id != room_id:
            raise not_found
        joined = membership == "join"
        if not await self._visibility.filter_events(
            requester.user_id, [parent], currently_joined=joined
        ):
            raise not_found
        return parent, joined

    async def _scan(
        self, requester: Requester, query: ChildrenQuery, limit: int, joined: bool
    ) -> tuple[list[StoredEvent], int | None]:
        """Up to ``limit`` visible children and the position a next page starts from
        (None: no more)."""
        found: list[StoredEvent] = []
        for _ in range(_MAX_SCAN_ROUNDS):
            size = limit - len(found) + 1
            rows = await self._store.children(query, size)
            events = await self._state.get_events(r.event_id for r in rows)
            visible = {
                e.pdu.event_id
                for e in await self._visibility.filter_events(
                    requester.user_id,
                    [events[r.event_id] for r in rows if r.event_id in events],
                    currently_joined=joined,
                )
            }
            for row in rows:
                if row.event_id not in visible:
                    continue
                if len(found) == limit:
                    # Continue at this row: backwards "at or before", forwards "after".
                    return found, row.stream_ordering - (0 if query.newest_first else 1)
                found.append(events[row.event_id])
            if len(rows) < size:
                return found, None
            last = rows[-1].stream_ordering
            if query.newest_first:
                query = replace(query, before=last - 1)
            else:
                query = replace(query, after=last)
        cursor = query.before if query.newest_first else query.after
        return found, cursor
