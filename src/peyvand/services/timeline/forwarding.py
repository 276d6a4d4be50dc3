"""Event creation forwarded to the room's event writer (issue 21, "Forwarding").

A process of a deployment without the ``event_writer`` role numbers no events: its
``EventCreationService`` hands ``send`` and ``create_room`` to ``ForwardedWrites``, which
asks the room's writer (``RoomOwners``; one event writer likewise hands another the
writes of the other's rooms, and each creates only rooms of its own) over its internal
API (``WriterLink``: ``POST /_peyvand/internal/v1/events/send`` and ``/rooms/create``,
answered by the writer's own ``EventCreationService``, see ``api.internal``) and returns
the stored events, or raises the writer's Matrix error unchanged. Background jobs
(retention, disappearing messages, server notices...) run wherever their lease is held,
so they go through here too.

Read-your-writes: the answer is returned once this process has announced the returned
events' stream positions (its ``EventStreamFollower`` caught up, ``StreamWaiter``), so
the caller's next read here sees what it wrote; at most ``CATCH_UP_SECONDS`` later.

The JSON forms below are the internal API's, read and written on both sides.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from peyvand.services.timeline.event_creation import EventSpec, TxnKey
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, JsonDict, RoomID, UserID

logger = logging.getLogger(__name__)

SEND_PATH: Final = "/_peyvand/internal/v1/events/send"
CREATE_ROOM_PATH: Final = "/_peyvand/internal/v1/rooms/create"
# How long a forwarded write's caller waits, at most, for this process to announce it.
CATCH_UP_SECONDS: Final = 10.0
# How long a forwarded request that waits on other servers may take (a countersigned
# invite, a join of a room on other servers with its full state, received events whose
# gaps are fetched): a client's join of a big room takes minutes.
SLOW_SECONDS: Final = 300.0


class WriterLink(Protocol):
    """The HTTP client towards the event writer (``federation.worker_client``)."""

    async def post(self, path: str, body: JsonDict, *, within: float | None = None) -> JsonDict:
        """The writer's JSON answer to ``body`` at ``path`` (within ``within`` seconds,
        the link's own by default); its Matrix error raised as a ``MatrixError`` with the
        same status, errcode and message."""
        ...


class StreamWaiter:
    """Waits until this process has announced a position of the events stream: an
    ``EventDispatcher`` listener, told after each announced batch (``announced`` is then
    the notifier's events position)."""

    def __init__(self, announced: Callable[[], int]) -> None:
        self._announced = announced
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def on_announced(self, _batch: Sequence[object]) -> None:
        position = self._announced()
        while self._waiting and self._waiting[0][0] <= position:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)

    async def wait_for(self, position: int) -> None:
        """Return once ``position`` is announced."""
        if position <= self._announced():
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (position, next(self._order), future))
        await future


class ForwardedWrites:
    """``EventCreationService.send`` and ``create_room`` done by the room's event writer
    (``RoomOwners``; for a room yet to be created, the writer it names)."""

    def __init__(
        self,
        links: Mapping[str, WriterLink],
        owners: RoomOwners,
        waiter: StreamWaiter,
        catch_up: float = CATCH_UP_SECONDS,
    ) -> None:
        """``links``: towards each writer of ``owners`` but this process."""
        self._links = links
        self._owners = owners
        self._waiter = waiter
        self._catch_up = catch_up

    async def send(
        self,
        room_id: RoomID,
        sender: UserID,
        spec: EventSpec,
        *,
        txn: TxnKey | None,
        unless_identical: bool,
        countersign: bool = False,
    ) -> StoredEvent:
        """``countersign``: an invite of a remote user, which the writer has countersigned
        by the invitee's server."""
        body = send_to_json(room_id, sender, spec, txn=txn, unless_identical=unless_identical)
        body["countersign"] = countersign
        link = self._links.get(self._owners.owner(room_id))
        if link is None:
            # The room's writer became this one meanwhile (it took the room over).
            raise MatrixError(Errcode.UNKNOWN, f"{room_id}'s writer changed; try again", status=503)
        # A countersigned invite waits on the invitee's server too.
        answer = await link.post(SEND_PATH, body, within=SLOW_SECONDS if countersign else None)
        event = stored_from_json(answer.get("event"))
        await self._seen([event])
        return event

    async def create_room(
        self,
        writer: str,
        room_version: RoomVersion,
        creator: UserID,
        create_content: Mapping[str, Any],
        initial: Sequence[EventSpec],
        *,
        room_id: RoomID | None,
        is_public: bool,
    ) -> tuple[RoomID, list[StoredEvent]]:
        body: JsonDict = {
            "room_version": room_version.identifier,
            "creator": creator,
            "create_content": dict(create_content),
            "initial": [spec_to_json(spec) for spec in initial],
            "room_id": room_id,
            "is_public": is_public,
        }
        answer = await self._links[writer].post(CREATE_ROOM_PATH, body)
        events = answer.get("events")
        created = answer.get("room_id")
        if not isinstance(events, list) or not isinstance(created, str):
            raise _bad_answer("room creation")
        stored = [stored_from_json(event) for event in events]
        await self._seen(stored)
        return RoomID(created), stored

    async def post(
        self, writer: str, path: str, body: JsonDict, *, within: float | None = None
    ) -> JsonDict:
        """``body`` to ``writer``'s internal API at ``path``: its answer (503 when the
        writer is this process: it took the room over meanwhile)."""
        link = self._links.get(writer)
        if link is None:
            raise MatrixError(Errcode.UNKNOWN, f"{writer} is this process; try again", status=503)
        return await link.post(path, body, within=within)

    async def _seen(self, events: Sequence[StoredEvent]) -> None:
        """Wait (bounded) until this process announced ``events``."""
        await self.seen(max((e.stream_ordering for e in events), default=0))

    async def seen(self, position: int) -> None:
        """Wait (bounded) until this process announced events stream ``position``."""
        try:
            async with asyncio.timeout(self._catch_up):
                await self._waiter.wait_for(position)
        except TimeoutError:
            logger.warning(
                "events position %d written by the event writer not announced here after %s s",
                position,
                self._catch_up,
            )


def _bad_answer(what: str) -> MatrixError:
    return MatrixError(Errcode.UNKNOWN, f"Malformed answer of the event writer: {what}", status=502)


def spec_to_json(spec: EventSpec) -> JsonDict:
    return {
        "type": spec.event_type,
        "content": dict(spec.content),
        "state_key": spec.state_key,
        "redacts": spec.redacts,
        "origin_server_ts": spec.origin_server_ts,
    }


def spec_from_json(data: Any) -> EventSpec:
    """An ``EventSpec`` from ``spec_to_json``'s form; 400 M_BAD_JSON otherwise."""
    if not isinstance(data, dict):
        raise MatrixError(Errcode.BAD_JSON, "An event must be an object")
    event_type, content = data.get("type"), data.get("content")
    state_key, redacts = data.get("state_key"), data.get("redacts")
    ts = data.get("origin_server_ts")
    if (
        not isinstance(event_type, str)
        or not isinstance(content, dict)
        or not isinstance(state_key, str | None)
        or not isinstance(redacts, str | None)
        or not (ts is None or (isinstance(ts, int) and not isinstance(ts, bool)))
    ):
        raise MatrixError(Errcode.BAD_JSON, "Malformed event")
    return EventSpec(
        event_type, content, state_key, None if redacts is None else EventID(redacts), ts
    )


def send_to_json(
    room_id: RoomID,
    sender: UserID,
    spec: EventSpec,
    *,
    txn: TxnKey | None,
    unless_identical: bool,
) -> JsonDict:
    return {
        "room_id": room_id,
        "sender": sender,
        "event": spec_to_json(spec),
        "txn": None if txn is None else list(txn),
        "unless_identical": unless_identical,
    }


def txn_from_json(data: Any) -> TxnKey | None:
    """A transaction key (user, device, scoped transaction ID) or None; 400 otherwise."""
    if data is None:
        return None
    if not isinstance(data, list) or len(data) != 3 or not all(isinstance(p, str) for p in data):
        raise MatrixError(Errcode.BAD_JSON, "'txn' must be three strings")
    return (data[0], data[1], data[2])


def stored_to_json(event: StoredEvent) -> JsonDict:
    return {
        "event_id": event.pdu.event_id,
        "room_version": event.pdu.room_version.identifier,
        "pdu": event.pdu.data,
        "stream_ordering": event.stream_ordering,
        "state_group": event.state_group,
        "redacted_by": event.redacted_by,
        "txn": None if event.txn is None else list(event.txn),
        "current_state_group": event.current_state_group,
    }


def stored_from_json(data: Any) -> StoredEvent:
    """A ``StoredEvent`` from ``stored_to_json``'s form (the writer's answer)."""
    if not isinstance(data, dict):
        raise _bad_answer("event")
    event_id, pdu, txn = data.get("event_id"), data.get("pdu"), data.get("txn")
    version = KNOWN_ROOM_VERSIONS.get(str(data.get("room_version")))
    stream, group = data.get("stream_ordering"), data.get("state_group")
    redacted_by, current = data.get("redacted_by"), data.get("current_state_group")
    if (
        not isinstance(event_id, str)
        or not isinstance(pdu, dict)
        or version is None
        or not isinstance(stream, int)
        or not isinstance(group, int)
        or not isinstance(redacted_by, str | None)
        or not (txn is None or (isinstance(txn, list) and len(txn) == 2))
        or not (current is None or (isinstance(current, int) and not isinstance(current, bool)))
    ):
        raise _bad_answer("event")
    return StoredEvent(
        Pdu(pdu, EventID(event_id), version),
        stream,
        group,
        None if redacted_by is None else EventID(redacted_by),
        None if txn is None else (str(txn[0]), str(txn[1])),
        current,
    )
