"""Jump to date: the event closest to a timestamp (Client-Server API ``GET
/_matrix/client/v1/rooms/{roomId}/timestamp_to_event``, Server-Server API ``GET
/_matrix/federation/v1/timestamp_to_event/{roomId}``), as Synapse's
``TimestampLookupHandler`` finds it.

Locally: the room's closest timeline event from ``ts`` (inclusive) in direction ``dir``
(ties by depth, then stream position) that the requester may see. A local answer may sit
at a gap in the history this server holds: none found, or (forwards) the event found cites
a ``prev_event`` this server lacks, or (backwards) the first event after ``ts`` does, so
events between ``ts`` and the answer may be missing. Then the other servers in the room are
asked in turn; the event one names is backfilled here (bounded), so the client can
paginate from it with ``/context``, and answers when it is on the right side of ``ts``,
visible to the requester and closer than the local one. Other servers get only the local
answer, as from Synapse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import StateKey
from peyvand.services.federation.room_access import RoomAccess
from peyvand.services.rooms.reads import Backfill
from peyvand.services.rooms.visibility import VisibilityService
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.event_timestamps import EventTimestampStore
from peyvand.storage.events import EventStore
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

Direction = Literal["f", "b"]

_CREATE: Final[StateKey] = ("m.room.create", "")
# Local candidates read at once; the closest visible one among them answers.
_CANDIDATES: Final = 50
# Servers asked, in turn, when the local history has a gap, each for at most this long.
_MAX_SERVERS: Final = 5
_ASK_SECONDS: Final = 10.0
# Rounds of /backfill (each up to _BACKFILL_LIMIT events) to reach the event another
# server named.
_BACKFILL_ROUNDS: Final = 5
_BACKFILL_LIMIT: Final = 100


VisibleFilter = Callable[[Sequence[StoredEvent]], Awaitable[list[StoredEvent]]]
"""events -> those the requester may see, in order."""


class RemoteTimestamps(Protocol):
    async def timestamp_to_event(
        self, destination: ServerName, room_id: RoomID, timestamp: int, direction: str
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Found:
    event_id: EventID
    origin_server_ts: int

    def as_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "origin_server_ts": self.origin_server_ts}


class TimestampLookup:
    def __init__(
        self,
        server_name: ServerName,
        store: EventTimestampStore,
        events: EventStore,
        state: StateService,
        visibility: VisibilityService,
        world_readable: Callable[[RoomID], Awaitable[bool]],
        backfill: Backfill,
        *,
        remote: RemoteTimestamps | None,
        allows: Callable[[ServerName], bool],
        access: RoomAccess,
    ) -> None:
        """``remote`` asks other servers (None: federation is off); ``allows`` says which
        servers may be asked; ``access`` checks servers asking this one;
        ``world_readable`` is ``RoomEventsService.world_readable``."""
        self._server_name = server_name
        self._store = store
        self._events = events
        self._state = state
        self._visibility = visibility
        self._world_readable = world_readable
        self._backfill = backfill
        self._remote = remote
        self._allows = allows
        self._access = access

    async def for_client(
        self, user_id: UserID, room_id: RoomID, timestamp: int, direction: Direction
    ) -> Found:
        """GET /rooms/{roomId}/timestamp_to_event: 403 unless the user is or was in the
        room or it is world-readable; 404 when no event they may see lies that way."""
        snapshot = await self._state.get_room(room_id)
        membership = snapshot.memberships.get(user_id) if snapshot is not None else None
        if snapshot is None or (membership is None and not await self._world_readable(room_id)):
            raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
        forwards = direction == "f"
        joined = membership == "join"

        async def visible(events: Sequence[StoredEvent]) -> list[StoredEvent]:
            return await self._visibility.filter_events(user_id, events, currently_joined=joined)

        local = await self._closest(room_id, timestamp, forwards, visible)
        if await self._at_gap(room_id, timestamp, forwards, local):
            remote = await self._ask_others(snapshot, timestamp, direction)
            if remote is not None and _closer(remote, local, timestamp) and await visible([remote]):
                local = remote
        if local is None:
            raise MatrixError(
                Errcode.NOT_FOUND,
                f"Unable to find an event from {timestamp} in direction {direction}",
            )
        return Found(local.pdu.event_id, local.pdu.origin_server_ts)

    async def for_server(
        self, origin: ServerName, room_id: RoomID, timestamp: int, direction: Direction
    ) -> Found:
        """GET /timestamp_to_event/{roomId} from ``origin``: this server's closest event
        (404 when none), for servers in the room (or any, if it is world-readable) that its
        ACL allows."""
        snapshot = await self._access.room(room_id, origin)
        await self._access.require_server_in_room(origin, snapshot)

        async def everything(events: Sequence[StoredEvent]) -> list[StoredEvent]:
            return list(events)

        found = await self._closest(room_id, timestamp, direction == "f", everything)
        if found is None:
            raise MatrixError(
                Errcode.NOT_FOUND,
                f"Unable to find an event from {timestamp} in direction {direction}",
            )
        return Found(found.pdu.event_id, found.pdu.origin_server_ts)

    async def _closest(
        self,
        room_id: RoomID,
        timestamp: int,
        forwards: bool,
        visible: VisibleFilter,
    ) -> StoredEvent | None:
        """The closest local event from ``timestamp`` that passes ``visible``, among the
        closest ``_CANDIDATES``."""
        ids = await self._store.closest_event_ids(
            room_id, timestamp, forwards=forwards, limit=_CANDIDATES
        )
        # Read past the event cache: these are mostly messages, read once.
        loaded = await self._events.get_events(ids)
        candidates = [loaded[e] for e in ids if e in loaded]
        passed = await visible(candidates)
        return passed[0] if passed else None

    async def _at_gap(
        self, room_id: RoomID, timestamp: int, forwards: bool, found: StoredEvent | None
    ) -> bool:
        """Whether events between ``timestamp`` and ``found`` may be missing here: none
        was found, or the event bounding that span on the far side of ``timestamp``
        cites a ``prev_event`` this server does not hold."""
        if found is None:
            return True
        if forwards:
            bound: StoredEvent | None = found
        else:
            after = await self._store.closest_event_ids(
                room_id, timestamp + 1, forwards=True, limit=1
            )
            bound = (await self._events.get_events(after)).get(after[0]) if after else None
        if bound is None:
            return False  # the newest events: what comes next arrives as usual
        prevs = bound.pdu.prev_event_ids
        return len(await self._state.get_dag_events(prevs)) < len(set(prevs))

    async def _ask_others(
        self, snapshot: RoomSnapshot, timestamp: int, direction: Direction
    ) -> StoredEvent | None:
        """The event another server in the room names, once held here (backfilled if
        need be); None when no server answers usefully."""
        if self._remote is None:
            return None
        room_id = snapshot.room_id
        for server in (await self._servers_to_ask(snapshot))[:_MAX_SERVERS]:
            try:
                async with asyncio.timeout(_ASK_SECONDS):
                    answer = await self._remote.timestamp_to_event(
                        server, room_id, timestamp, direction
                    )
            except Exception as exc:
                logger.info("timestamp_to_event of %s from %s failed: %s", room_id, server, exc)
                continue
            event_id = answer.get("event_id") if isinstance(answer, dict) else None
            if not isinstance(event_id, str):
                continue
            event = await self._fetched(room_id, EventID(event_id))
            if event is None:
                continue
            ts = event.pdu.origin_server_ts
            if (ts >= timestamp) if direction == "f" else (ts <= timestamp):
                return event
            logger.info("%s named %s, on the wrong side of %d", server, event_id, timestamp)
        return None

    async def _servers_to_ask(self, snapshot: RoomSnapshot) -> list[ServerName]:
        """The servers in the room, the creator's first (it holds the whole history,
        and stays listed while a partial state here lacks its members)."""
        create = await self._state.get_state_events(snapshot.state, [_CREATE])
        creator = server_name_of(create[_CREATE].sender) if _CREATE in create else None
        servers = set(snapshot.joined_servers()) | ({creator} if creator else set())
        return sorted(
            (s for s in servers if s != self._server_name and self._allows(s)),
            key=lambda s: (s != creator, s),
        )

    async def _fetched(self, room_id: RoomID, event_id: EventID) -> StoredEvent | None:
        """``event_id`` from this server's timeline, backfilling older history (bounded)
        until it arrives."""
        for _ in range(_BACKFILL_ROUNDS):
            event = await self._state.get_event(event_id)
            if event is not None:
                return event if event.pdu.room_id == room_id else None
            if not await self._backfill(room_id, _BACKFILL_LIMIT):
                break
        event = await self._state.get_event(event_id)
        return event if event is not None and event.pdu.room_id == room_id else None


def _closer(event: StoredEvent, other: StoredEvent | None, timestamp: int) -> bool:
    """Whether ``event`` is closer to ``timestamp`` than ``other`` (any is closer than
    none)."""
    return other is None or abs(event.pdu.origin_server_ts - timestamp) < abs(
        other.pdu.origin_server_ts - timestamp
    )
