"""Server-side search of room events (Client-Server API, "Server Side Search",
``POST /search``, category ``room_events``).

The rooms searched are those the user is joined to, as Synapse (a ``leave`` is also a
rejected invitation or a withdrawn knock, and ``count`` is read before visibility: a
room the user never saw must not answer it); each match is then shown only if the user
may see it, by the same history visibility rules as ``/messages``
(``VisibilityService``), and only if it passes the request's ``RoomEventFilter``.
Visibility is checked per page, so a page reads up to ``_MAX_ROUNDS`` batches of
matches to fill itself; ``count`` is the matches in those joined rooms before
visibility (at most ``MAX_COUNT``), an approximate count as the spec allows, counted
for the first page and carried by ``next_batch`` to the next ones. ``next_batch``
continues after the last match shown, by stream position, for ``recent`` only: as
Synapse, ``rank`` answers one page (an offset into a ranking that every new message
changes would repeat or skip results); a filter ``limit`` of 0 answers no page and so
no ``next_batch``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson

from peyvand.errors import Errcode, MatrixError
from peyvand.events.search_text import SEARCH_KEYS, search_terms
from peyvand.services.accounts.requester import Requester
from peyvand.services.rooms.reads import RoomEventsService, position_token
from peyvand.services.rooms.visibility import VisibilityService
from peyvand.services.sync.filtering import EventFilter, type_matches
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import StoredEvent
from peyvand.storage.search import Order, SearchHit, SearchQuery, SearchStore
from peyvand.types import EventID, JsonDict, RoomID, UserID

__all__ = ["EventContext", "SearchRequest", "SearchService"]

# Results per page at most (a larger filter limit is cut to it; next_batch goes on).
MAX_RESULTS: Final = 100
# Context events on each side of a result at most.
MAX_CONTEXT: Final = 50
# Context events in a response at most (all results, both sides): each side's limit is
# cut in proportion beyond it, so 100 results with 50 on each side read 500, not 10,000.
_CONTEXT_BUDGET: Final = 500
# ``count`` stops there: beyond it, the work of counting grows with every match.
MAX_COUNT: Final = 10_000
# A page reads at most this many batches of matches looking for visible ones.
_MAX_ROUNDS: Final = 5
# Memberships whose rooms are searched: joined only (see the module docstring).
_SEARCHED_MEMBERSHIPS: Final = frozenset({"join"})

Memberships = Callable[[UserID], Awaitable[dict[RoomID, tuple[str, int]]]]
Forgotten = Callable[[UserID], Awaitable[set[RoomID]]]


@dataclass(frozen=True, slots=True)
class EventContext:
    """``event_context``: events around each result, and their senders' profiles."""

    before_limit: int = 5
    after_limit: int = 5
    include_profile: bool = False


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """The ``room_events`` criteria, validated (``api.client.search``)."""

    search_term: str
    keys: tuple[str, ...] = tuple(SEARCH_KEYS)
    order_by: Order = "rank"
    event_filter: EventFilter = field(default_factory=EventFilter)
    event_context: EventContext | None = None
    include_state: bool = False
    group_by: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Batch:
    """A ``next_batch`` token: where a search of one order continues, maybe in one room,
    and the ``count`` its first page answered (so later pages need not count again)."""

    order: Order
    position: int
    room_id: RoomID | None = None
    count: int | None = None

    def encode(self) -> str:
        raw = orjson.dumps([self.order, self.position, self.room_id, self.count])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> _Batch:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, ValueError) as exc:
            raise MatrixError(Errcode.INVALID_PARAM, "Invalid next_batch") from exc
        if (
            not isinstance(data, list)
            or len(data) != 4
            or data[0] not in ("rank", "recent")
            or type(data[1]) is not int
            or not (0 if data[0] == "rank" else -(2**63)) <= data[1] < 2**63
            or not (data[2] is None or isinstance(data[2], str))
            or not (data[3] is None or (type(data[3]) is int and data[3] >= 0))
        ):
            raise MatrixError(Errcode.INVALID_PARAM, "Invalid next_batch")
        room_id = None if data[2] is None else RoomID(data[2])
        return cls(data[0], data[1], room_id, data[3])


@dataclass(slots=True)
class _Found:
    hit: SearchHit
    event: StoredEvent


@dataclass(frozen=True, slots=True)
class _Page:
    found: list[_Found]
    # Where the next page starts; None: no more matches.
    next_position: int | None


class SearchService:
    def __init__(
        self,
        store: SearchStore,
        state: StateService,
        visibility: VisibilityService,
        room_events: RoomEventsService,
        memberships: Memberships,
        forgotten: Forgotten,
    ) -> None:
        self._store = store
        self._state = state
        self._visibility = visibility
        self._room_events = room_events
        self._memberships = memberships
        self._forgotten = forgotten

    async def search(
        self, requester: Requester, request: SearchRequest, next_batch: str | None
    ) -> JsonDict:
        """The ``room_events`` part of the response to ``POST /search``."""
        batch = _Batch.decode(next_batch) if next_batch is not None else None
        if batch is not None and batch.order != request.order_by:
            raise MatrixError(Errcode.INVALID_PARAM, "next_batch is of another order_by")
        user_id = requester.user_id
        memberships = await self._searched_rooms(user_id, request.event_filter, batch)
        terms = search_terms(request.search_term)
        keys = _keys(request.keys, request.event_filter)
        if not terms or not memberships or not keys:
            return {"results": [], "count": 0, "highlights": []}
        event_filter = request.event_filter
        senders = event_filter.senders
        query = SearchQuery(
            terms,
            tuple(sorted(memberships)),
            keys,
            senders=tuple(sorted(senders)) if senders is not None else None,
            not_senders=tuple(sorted(event_filter.not_senders)),
        )
        limit = max(0, min(event_filter.limit, MAX_RESULTS))
        page = await self._page(
            user_id, memberships, query, request, limit, batch.position if batch else None
        )
        count = (
            batch.count
            if batch is not None and batch.count is not None
            else await self._store.count(query, at_most=MAX_COUNT)
        )
        events = [f.event for f in page.found]
        serialized = await self._room_events.serialize(events, requester)
        context = request.event_context
        contexts = (
            await self._contexts(requester, events, context)
            if context is not None
            else [{} for _ in events]
        )
        result: JsonDict = {
            "results": [
                {"rank": f.hit.rank, "result": event, "context": context}
                for f, event, context in zip(page.found, serialized, contexts, strict=True)
            ],
            "count": count,
            "highlights": list(terms),
        }
        next_token = None
        if page.next_position is not None and request.order_by == "recent" and limit > 0:
            room_id = batch.room_id if batch is not None else None
            next_token = _Batch(request.order_by, page.next_position, room_id, count).encode()
            result["next_batch"] = next_token
        if request.include_state:
            rooms = dict.fromkeys(f.hit.room_id for f in page.found)
            result["state"] = {
                room_id: await self._room_events.get_state(requester, room_id) for room_id in rooms
            }
        groups = _groups(page.found, request, next_token is not None)
        if groups:
            result["groups"] = groups
        return result

    async def _searched_rooms(
        self, user_id: UserID, event_filter: EventFilter, batch: _Batch | None
    ) -> dict[RoomID, str]:
        """room -> the user's membership, for the rooms searched."""
        memberships = await self._memberships(user_id)
        forgotten = await self._forgotten(user_id)
        rooms = {
            room_id: membership
            for room_id, (membership, _) in memberships.items()
            if membership in _SEARCHED_MEMBERSHIPS and room_id not in forgotten
        }
        allowed = {RoomID(r) for r in event_filter.filter_rooms(rooms)}
        if batch is not None and batch.room_id is not None:
            allowed &= {batch.room_id}
        return {room_id: rooms[room_id] for room_id in allowed}

    async def _page(
        self,
        user_id: UserID,
        memberships: dict[RoomID, str],
        query: SearchQuery,
        request: SearchRequest,
        limit: int,
        position: int | None,
    ) -> _Page:
        """Up to ``limit`` matches ``user_id`` may see, from ``position`` on."""
        order = request.order_by
        found: list[_Found] = []
        if limit == 0:
            return _Page(found, None)
        fetch = max(2 * limit, 20)
        for _ in range(_MAX_ROUNDS):
            hits = await self._store.search(query, order, position=position, limit=fetch)
            visible = await self._visible(user_id, memberships, hits, request.event_filter)
            for hit in hits:
                if len(found) == limit:
                    return _Page(found, position)
                position = hit.stream_ordering if order == "recent" else (position or 0) + 1
                event = visible.get(hit.event_id)
                if event is not None:
                    found.append(_Found(hit, event))
            if len(hits) < fetch:
                return _Page(found, None)
            if len(found) == limit:
                return _Page(found, position)
        return _Page(found, position)

    async def _visible(
        self,
        user_id: UserID,
        memberships: dict[RoomID, str],
        hits: Sequence[SearchHit],
        event_filter: EventFilter,
    ) -> dict[str, StoredEvent]:
        """The events of ``hits`` ``user_id`` may see and the filter lets through, by ID."""
        events = await self._state.get_events(h.event_id for h in hits)
        by_room: dict[RoomID, list[StoredEvent]] = {}
        for hit in hits:
            event = events.get(hit.event_id)
            if event is not None and event.redacted_by is None:
                by_room.setdefault(hit.room_id, []).append(event)
        visible: dict[str, StoredEvent] = {}
        for room_id, room_events in by_room.items():
            joined = memberships.get(room_id) == "join"
            for event in await self._visibility.filter_events(
                user_id, room_events, currently_joined=joined
            ):
                if event_filter.matches(event.pdu.data):
                    visible[event.pdu.event_id] = event
        return visible

    async def _contexts(
        self, requester: Requester, events: Sequence[StoredEvent], context: EventContext
    ) -> list[JsonDict]:
        """``context`` of each result: the events around it the user may see, pagination
        tokens, and with ``include_profile`` its senders' profiles at the last of them.
        The response carries at most ``_CONTEXT_BUDGET`` context events in all (each
        side's limit is cut to share it); every context event is serialised in one
        ``serialize`` call and the profiles' member events read at once."""
        if not events:
            return []
        before_limit, after_limit = _context_limits(context, len(events))
        user_id = requester.user_id
        around = await asyncio.gather(
            *(self._around(user_id, e, before_limit, after_limit) for e in events)
        )
        flat = [e for before, after in around for e in (*before, *after)]
        serialized = iter(await self._room_events.serialize(flat, requester))
        results: list[JsonDict] = []
        for event, (before, after) in zip(events, around, strict=True):
            results.append(
                {
                    "events_before": [next(serialized) for _ in before],
                    "events_after": [next(serialized) for _ in after],
                    "start": position_token(
                        before[-1].stream_ordering - 1 if before else event.stream_ordering - 1
                    ),
                    "end": position_token(
                        after[-1].stream_ordering if after else event.stream_ordering
                    ),
                }
            )
        if context.include_profile:
            wanted = [
                (
                    event.pdu.room_id,
                    (after[-1] if after else event).state_group,
                    sorted({e.pdu.sender for e in [*before, event, *after]}),
                )
                for event, (before, after) in zip(events, around, strict=True)
            ]
            for result, profiles in zip(results, await self._profiles(wanted), strict=True):
                result["profile_info"] = profiles
        return results

    async def _around(
        self, user_id: UserID, event: StoredEvent, before_limit: int, after_limit: int
    ) -> tuple[list[StoredEvent], list[StoredEvent]]:
        """The events the user may see just before ``event`` (newest first) and after."""
        room_id = event.pdu.room_id
        before: list[StoredEvent] = []
        after: list[StoredEvent] = []
        if before_limit:
            before = list(
                (
                    await self._room_events.scan(
                        user_id,
                        room_id,
                        after=None,
                        before=event.stream_ordering - 1,
                        newest_first=True,
                        limit=before_limit,
                        event_filter=None,
                    )
                ).events
            )
        if after_limit:
            after = list(
                (
                    await self._room_events.scan(
                        user_id,
                        room_id,
                        after=event.stream_ordering,
                        before=None,
                        newest_first=False,
                        limit=after_limit,
                        event_filter=None,
                    )
                ).events
            )
        return before, after

    async def _profiles(
        self, wanted: Sequence[tuple[RoomID, int, Sequence[str]]]
    ) -> list[JsonDict]:
        """For each ``(room, state group, senders)``: ``{user: {displayname,
        avatar_url}}`` from the member events at that group, read in one batch."""
        groups: dict[tuple[RoomID, int], set[str]] = {}
        for room_id, group, senders in wanted:
            groups.setdefault((room_id, group), set()).update(senders)
        order = list(groups)
        found = await asyncio.gather(
            *(
                self._state.state_ids_in_room(
                    room_id, group, [("m.room.member", s) for s in sorted(groups[room_id, group])]
                )
                for room_id, group in order
            )
        )
        ids_at = dict(zip(order, found, strict=True))
        members = await self._state.get_state_events_by_id(
            {event_id for ids in found for event_id in ids.values()}
        )
        results: list[JsonDict] = []
        for room_id, group, senders in wanted:
            ids = ids_at[room_id, group]
            profiles: JsonDict = {}
            for sender in senders:
                member = members.get(ids.get(("m.room.member", sender), EventID("")))
                if member is not None:
                    content = member.pdu.content
                    profiles[sender] = {
                        "displayname": content.get("displayname"),
                        "avatar_url": content.get("avatar_url"),
                    }
            results.append(profiles)
        return results


def _context_limits(context: EventContext, results: int) -> tuple[int, int]:
    """Each side's context limit for ``results`` results: at most ``MAX_CONTEXT``, and
    cut in proportion so the response holds at most ``_CONTEXT_BUDGET`` context events."""
    before = min(context.before_limit, MAX_CONTEXT)
    after = min(context.after_limit, MAX_CONTEXT)
    share = _CONTEXT_BUDGET // max(results, 1)
    if before + after > share:
        before, after = before * share // (before + after), after * share // (before + after)
    return before, after


def _keys(keys: Sequence[str], event_filter: EventFilter) -> tuple[str, ...]:
    """The requested keys whose event type the filter's ``types``/``not_types`` allow."""

    def allowed(event_type: str) -> bool:
        if any(type_matches(p, event_type) for p in event_filter.not_types):
            return False
        return event_filter.types is None or any(
            type_matches(p, event_type) for p in event_filter.types
        )

    return tuple(k for k in keys if allowed(SEARCH_KEYS[k]))


def _groups(found: Sequence[_Found], request: SearchRequest, more: bool) -> JsonDict:
    """``groupings``: the results by room and by sender, in result order; ``order`` is
    the group's first result's rank. With ``recent`` order, a room's group carries a
    ``next_batch`` that continues within that room."""
    groups: JsonDict = {}
    for key in sorted(request.group_by):
        grouped: dict[str, JsonDict] = {}
        for item in found:
            value = item.hit.room_id if key == "room_id" else item.event.pdu.sender
            group = grouped.setdefault(value, {"results": [], "order": item.hit.rank})
            group["results"].append(item.event.pdu.event_id)
            if key == "room_id" and more and request.order_by == "recent":
                group["next_batch"] = _Batch(
                    "recent", item.hit.stream_ordering, RoomID(value)
                ).encode()
        groups[key] = grouped
    return groups
