"""Space hierarchies: the Client-Server API's ``GET /_matrix/client/v1/rooms/{roomId}/hierarchy``
and the Server-Server API's ``GET /_matrix/federation/v1/hierarchy/{roomId}`` (both
"Spaces", space_hierarchy.yaml), walked as Synapse's ``RoomSummaryHandler`` walks them.

The client walk is depth-first from the requested room, each room's children in the
spec's order ("Ordering of children within a space"), each room once (a space that
contains itself or an ancestor ends there), and lists the rooms the user may see
(``RoomSummaryService.local_entry``); a room this server is not in is asked of its
``via`` servers, or taken from its parent's answer when it is not a space. Bounds: at
most ``_MAX_LIMIT`` rooms a page, ``_MAX_VISITED`` rooms looked at and
``_MAX_REMOTE_ASKS`` remote rooms asked for a request, ``_WALK_SECONDS`` in all; the
rest is left to the next page. A walk ends after ``_MAX_WALK`` rooms, with at most
``_MAX_QUEUED`` waiting.

``next_batch`` names the walk's remaining queue, kept in memory for
``_SESSION_SECONDS``: the newest ``_SESSIONS_PER_USER`` tokens of each of the
``_SESSION_USERS`` users who most recently used one, so a user's requests only ever push
out that user's own older tokens. A token that is unknown, expired, or from a request
with another user, room, ``suggested_only`` or ``max_depth`` is 400 ``M_INVALID_PARAM``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from peyvand.errors import Errcode, MatrixError
from peyvand.lru import LRU
from peyvand.services.federation.room_access import RoomAccess
from peyvand.services.rooms.remote_hierarchy import RemoteHierarchies, RemoteSpace
from peyvand.services.rooms.room_summary import RoomEntry, RoomSummaryService
from peyvand.types import JsonDict, RoomID, ServerName, UserID, server_name_of

_MAX_LIMIT: Final = 50
_MAX_VISITED: Final = 200
_MAX_REMOTE_ASKS: Final = 10
# The least time left to start asking about another remote room (one server's time).
_ASK_SECONDS: Final = 10.0
_WALK_SECONDS: Final = 30.0
_MAX_WALK: Final = 10_000
_MAX_QUEUED: Final = 2_000
_SESSION_SECONDS: Final = 300.0
# Walks held: a few per user (a client pages one walk, or a few spaces at once), for the
# users who paged most recently; at most 1,024 in all.
_SESSION_USERS: Final = 256
_SESSIONS_PER_USER: Final = 4
# Servers asked for one room, and children summarised for another server (as Synapse).
_MAX_VIA: Final = 3
_MAX_FEDERATION_CHILDREN: Final = 50
_SPACE: Final = "m.space"


@dataclass(frozen=True, slots=True)
class _Params:
    """What a pagination token is only valid for."""

    user_id: UserID
    room_id: RoomID
    suggested_only: bool
    max_depth: int | None


@dataclass(frozen=True, slots=True)
class _Queued:
    """A room waiting to be walked: the servers to ask, its depth, and its summary when
    its parent's remote answer gave one."""

    room_id: RoomID
    via: tuple[str, ...]
    depth: int
    remote_room: JsonDict | None = None


@dataclass(frozen=True, slots=True)
class _Session:
    params: _Params
    queue: tuple[_Queued, ...]
    processed: frozenset[RoomID]
    expires: float


@dataclass(slots=True)
class _Walk:
    """One request's walk: the queue (next room last), the rooms done, and its budgets."""

    queue: list[_Queued]
    processed: set[RoomID]
    deadline: float
    visited: int = 0
    asked: int = 0


class SpaceHierarchyService:
    def __init__(
        self,
        server_name: ServerName,
        summaries: RoomSummaryService,
        remote: RemoteHierarchies,
        access: RoomAccess,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``access`` checks servers asking this one (server ACLs)."""
        self._server_name = server_name
        self._summaries = summaries
        self._remote = remote
        self._access = access
        self._clock = clock
        self._sessions: LRU[UserID, LRU[str, _Session]] = LRU(_SESSION_USERS)

    # -- GET /_matrix/client/v1/rooms/{roomId}/hierarchy -------------------------------

    async def client_hierarchy(
        self,
        user_id: UserID,
        room_id: RoomID,
        *,
        suggested_only: bool,
        max_depth: int | None,
        limit: int | None,
        from_token: str | None,
    ) -> JsonDict:
        """``{"rooms": [...], "next_batch"?}``: a page of the walk from ``room_id``;
        403 when the user may not see ``room_id`` itself."""
        params = _Params(user_id, room_id, suggested_only, max_depth)
        root_via = await self._check_root(params)
        now = self._clock()
        if from_token is not None:
            mine = self._sessions.get(user_id)
            session = None if mine is None else mine.get(from_token)
            if session is None or session.expires <= now or session.params != params:
                raise MatrixError(Errcode.INVALID_PARAM, "Unknown pagination token")
            walk = _Walk(list(session.queue), set(session.processed), now + _WALK_SECONDS)
        else:
            walk = _Walk([_Queued(room_id, root_via, 0)], set(), now + _WALK_SECONDS)
        page = min(limit, _MAX_LIMIT) if limit is not None else _MAX_LIMIT
        rooms: list[JsonDict] = []
        while walk.queue and len(rooms) < page and self._within_budget(walk):
            item = walk.queue.pop()
            if item.room_id in walk.processed:
                continue
            found = await self._walk_room(params, item, walk)
            if found is None:  # out of remote budget: it waits for the next page
                walk.queue.append(item)
                break
            entry, known = found
            walk.processed.add(item.room_id)
            walk.visited += 1
            if entry is None:
                continue
            rooms.append(entry.as_json())
            if max_depth is None or item.depth < max_depth:
                self._enqueue(walk, entry, item.depth + 1, known)
        result: JsonDict = {"rooms": rooms}
        remaining = tuple(q for q in walk.queue if q.room_id not in walk.processed)
        if remaining and len(walk.processed) < _MAX_WALK:
            token = secrets.token_urlsafe(16)
            mine = self._sessions.get(user_id)
            if mine is None:
                mine = LRU(_SESSIONS_PER_USER)
                self._sessions.put(user_id, mine)
            mine.put(
                token,
                _Session(
                    params,
                    remaining,
                    frozenset(walk.processed),
                    self._clock() + _SESSION_SECONDS,
                ),
            )
            result["next_batch"] = token
        return result

    async def _check_root(self, params: _Params) -> tuple[str, ...]:
        """The servers to ask for the requested room (none when it is local); 403 when
        the user may not see it (Synapse: also when no server knows it)."""
        snapshot = await self._summaries.resident_room(params.room_id)
        if snapshot is not None:
            entry = await self._summaries.local_entry(
                snapshot, user_id=params.user_id, include_children=False
            )
            if entry is not None:
                return ()
        else:
            via = _room_server(params.room_id)
            space = await self._remote.ask(
                params.room_id, via, suggested_only=params.suggested_only
            )
            if space is not None and await self._summaries.remote_visible(
                params.user_id, params.room_id, space.room
            ):
                return via
        raise MatrixError(Errcode.FORBIDDEN, "You are not allowed to view this room")

    def _within_budget(self, walk: _Walk) -> bool:
        return (
            walk.visited < _MAX_VISITED
            and len(walk.processed) < _MAX_WALK
            and self._clock() < walk.deadline
        )

    async def _walk_room(
        self, params: _Params, item: _Queued, walk: _Walk
    ) -> tuple[RoomEntry | None, RemoteSpace | None] | None:
        """The room's entry for the user (None: hidden, or no server answered in time)
        and the remote answer it came from; None when it needs asking another server
        and the request's budget is spent."""
        snapshot = await self._summaries.resident_room(item.room_id)
        if snapshot is not None:
            local = await self._summaries.local_entry(
                snapshot, user_id=params.user_id, suggested_only=params.suggested_only
            )
            return local, None
        leaf = item.remote_room is not None and (
            item.remote_room.get("room_type") != _SPACE
            or (params.max_depth is not None and item.depth >= params.max_depth)
        )
        space: RemoteSpace | None = None
        if item.remote_room is not None and leaf:
            entry: RoomEntry | None = RoomEntry(item.remote_room)
        else:
            remaining = walk.deadline - self._clock()
            if walk.asked >= _MAX_REMOTE_ASKS or (walk.asked and remaining < _ASK_SECONDS):
                return None
            walk.asked += 1
            try:  # the first ask of a request always has its time: each page moves on
                async with asyncio.timeout(max(remaining, _ASK_SECONDS)):
                    space = await self._remote.ask(
                        item.room_id, item.via[:_MAX_VIA], suggested_only=params.suggested_only
                    )
            except TimeoutError:
                space = None
            entry = None if space is None else RoomEntry(space.room, space.children_state)
        if entry is not None and not await self._summaries.remote_visible(
            params.user_id, item.room_id, entry.room
        ):
            entry = None
        return entry, space

    @staticmethod
    def _enqueue(walk: _Walk, entry: RoomEntry, depth: int, known: RemoteSpace | None) -> None:
        """Queue the room's children, next room last, leaving out those done, those the
        remote server called inaccessible, and any beyond ``_MAX_QUEUED``."""
        summaries: Mapping[RoomID, JsonDict] = {} if known is None else known.children
        hidden = frozenset() if known is None else known.inaccessible_children
        room_ids = [
            RoomID(c["state_key"])
            for c in entry.children_state
            if c["state_key"] not in walk.processed and c["state_key"] not in hidden
        ]
        vias = {c["state_key"]: c["content"]["via"] for c in entry.children_state}
        room_ids = room_ids[: max(0, _MAX_QUEUED - len(walk.queue))]
        walk.queue.extend(
            _Queued(r, tuple(vias[r]), depth, summaries.get(r)) for r in reversed(room_ids)
        )

    # -- GET /_matrix/federation/v1/hierarchy/{roomId} ---------------------------------

    async def federation_hierarchy(
        self, origin: ServerName, room_id: RoomID, suggested_only: bool
    ) -> JsonDict:
        """The room (with ``children_state`` if a space), the summaries of the children
        this server is in that ``origin`` may see (``children``, at most 50), and those
        it may not (``inaccessible_children``); 404 when this server is not in the room
        or ``origin`` may not see it, 403 when the room's server ACL denies ``origin``."""
        snapshot = await self._access.room(room_id, origin)
        root = None
        if snapshot.takes_part(self._server_name):
            root = await self._summaries.local_entry(
                snapshot, origin=origin, suggested_only=suggested_only
            )
        if root is None:
            raise MatrixError(Errcode.NOT_FOUND, f"Unknown room: {room_id}")
        children: list[JsonDict] = []
        inaccessible: list[RoomID] = []
        for child in root.children_state[:_MAX_FEDERATION_CHILDREN]:
            child_id = RoomID(child["state_key"])
            child_snapshot = await self._summaries.resident_room(child_id)
            if child_snapshot is None:
                continue
            entry = await self._summaries.local_entry(
                child_snapshot, origin=origin, include_children=False
            )
            if entry is None:
                inaccessible.append(child_id)
            else:
                children.append(entry.room)
        return {
            "room": root.as_json(),
            "children": children,
            "inaccessible_children": inaccessible,
        }


def _room_server(room_id: RoomID) -> tuple[str, ...]:
    """The server named in a room ID (rooms before version 12), to ask about a room this
    server is not in; none for a version 12 room ID."""
    return (server_name_of(room_id),) if ":" in room_id else ()
