"""Threads (Client-Server API, "Threading"): which events form which thread, recorded
as they are stored, and the list of a room's threads (``GET /threads``).

An event is in thread T when its ``m.relates_to`` has ``rel_type: m.thread`` and
``event_id`` T, the thread root. Thread events are recorded in the same group commit as
the events (an ``EventWriter`` pre-commit hook), whether sent here, received over
federation or backfilled, so the list never lags the timeline.

The list is ordered by each thread's latest event (its stream position), newest first,
as Synapse orders it; threads whose root is unknown here, in another room or hidden from
the requester by history visibility (or sent by a user they ignore) are left out, and a
page is filled from further threads, a bounded number of reads at most.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from peyvand.errors import forbidden, invalid_param
from peyvand.services.accounts.requester import Requester
from peyvand.services.rooms.reads import RoomEventsService
from peyvand.services.rooms.visibility import VisibilityService
from peyvand.services.timeline.event_writer import TxnWrite
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.database import Connection
from peyvand.storage.models import EventToPersist, StoredEvent
from peyvand.storage.threads import ThreadEvent, ThreadRow, ThreadStore
from peyvand.types import EventID, JsonDict, RoomID, UserID

THREAD_RELATION: Final = "m.thread"
# threads_list.yaml ``include``.
INCLUDE_ALL: Final = "all"
INCLUDE_PARTICIPATED: Final = "participated"
INCLUDES: Final = (INCLUDE_ALL, INCLUDE_PARTICIPATED)
# Reads of further threads to fill one page whose threads are hidden from the requester.
_MAX_ROUNDS: Final = 8
# A ``next_batch``: "t" and the latest position of the last thread listed.
_TOKEN: Final = re.compile(r"t(-?)([0-9]{1,19})")


def thread_events(batch: Sequence[EventToPersist]) -> list[ThreadEvent]:
    """The events of ``batch`` that are in a thread (not those stored redacted, whose
    relation is gone)."""
    return [
        ThreadEvent(e.pdu.room_id, e.relates_to, e.pdu.event_id, e.stream_ordering, e.pdu.sender)
        for e in batch
        if e.rel_type == THREAD_RELATION and e.relates_to is not None and e.redacted_by is None
    ]


def parse_token(token: str) -> int:
    """A ``next_batch`` given back as ``from``; 400 M_INVALID_PARAM if not one."""
    match = _TOKEN.fullmatch(token)
    if match is None or int(match.group(2)) > 2**63 - 1:
        raise invalid_param(f"Unknown pagination token: {token!r}")
    position = int(match.group(2))
    return -position if match.group(1) else position


def make_token(position: int) -> str:
    return f"t{position}"


@dataclass(frozen=True, slots=True)
class ThreadsPage:
    chunk: list[JsonDict]
    next_batch: str | None


class ThreadsService:
    def __init__(
        self,
        store: ThreadStore,
        state: StateService,
        visibility: VisibilityService,
        room_events: RoomEventsService,
    ) -> None:
        self._store = store
        self._state = state
        self._visibility = visibility
        self._room_events = room_events

    async def prepare(self, batch: Sequence[EventToPersist]) -> TxnWrite | None:
        """The ``EventWriter`` pre-commit hook: the batch's thread events, written in its
        transaction."""
        events = thread_events(batch)
        if not events:
            return None

        async def write(txn: Connection) -> None:
            await self._store.write(txn, events)

        return write

    async def list_threads(
        self,
        requester: Requester,
        room_id: RoomID,
        *,
        include: str,
        limit: int,
        from_token: str | None,
    ) -> ThreadsPage:
        """``GET /_matrix/client/v1/rooms/{roomId}/threads`` (threads_list.yaml).

        403 to a user who never was in the room unless it is world-readable (and for a
        room unknown here), as Synapse answers.
        """
        if include not in INCLUDES:
            raise invalid_param(f"include must be one of {', '.join(INCLUDES)}")
        before = parse_token(from_token) if from_token is not None else None
        user_id = requester.user_id
        snapshot = await self._state.get_room(room_id)
        membership = snapshot.memberships.get(user_id) if snapshot is not None else None
        if membership is None and not await self._room_events.world_readable(room_id):
            raise forbidden(f"User {user_id} is not in room {room_id}")
        participant = user_id if include == INCLUDE_PARTICIPATED else None
        found: list[StoredEvent] = []
        for _ in range(_MAX_ROUNDS):
            size = limit - len(found) + 1
            rows = await self._store.get_threads(
                room_id, before=before, limit=size, participant=participant
            )
            visible = await self._visible_roots(user_id, room_id, rows, membership == "join")
            for row in rows:
                if len(found) == limit:
                    # A further thread exists: the next page starts after the last listed.
                    return await self._page(requester, found, before)
                root = visible.get(row.thread_id)
                if root is not None:
                    found.append(root)
                before = row.latest_stream_ordering
            if len(rows) < size:
                return await self._page(requester, found, None)
        return await self._page(requester, found, before)

    async def _visible_roots(
        self, user_id: UserID, room_id: RoomID, rows: Sequence[ThreadRow], joined: bool
    ) -> dict[EventID, StoredEvent]:
        """The roots of ``rows`` known here, in ``room_id`` and visible to ``user_id``,
        by thread ID."""
        roots = await self._state.get_events(r.thread_id for r in rows)
        in_room = [e for e in roots.values() if e.pdu.room_id == room_id]
        visible = await self._visibility.filter_events(user_id, in_room, currently_joined=joined)
        return {e.pdu.event_id: e for e in visible}

    async def _page(
        self, requester: Requester, roots: Sequence[StoredEvent], before: int | None
    ) -> ThreadsPage:
        chunk = await self._room_events.serialize(roots, requester)
        return ThreadsPage(chunk, make_token(before) if before is not None else None)
