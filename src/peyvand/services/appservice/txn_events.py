"""The events of an application-service transaction in the client format (Application
Service API, "Pushing events": "A list of events, formatted as per the Client-Server
API"): stored events as ``/sync`` and ``/messages`` serialise them (``unsigned.age``,
``prev_content``, redacted as they are now, ...), and invites from other servers to
rooms this server is not in, kept apart from the events (migration 018), as their
invite event with ``unsigned.invite_room_state``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.events.serialize import client_event
from peyvand.storage.appservice_txns import InviteEvent
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, JsonDict

__all__ = ["TransactionEvents"]

GetEvents = Callable[[Sequence[EventID]], Awaitable[Mapping[EventID, StoredEvent]]]
Serialize = Callable[[Sequence[StoredEvent]], Awaitable[list[JsonDict]]]
InvitesAt = Callable[[Sequence[int]], Awaitable[Mapping[int, InviteEvent]]]


class TransactionEvents:
    def __init__(
        self,
        get_events: GetEvents,
        serialize: Serialize,
        invites_at: InvitesAt,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._get_events = get_events
        self._serialize = serialize
        self._invites_at = invites_at
        self._clock = clock

    async def load(self, queued: Sequence[tuple[int, EventID]]) -> list[JsonDict]:
        """The client events of ``queued`` (stream position, event ID), in that order;
        those gone since (purged, an invite rejected) are left out. One read of the
        events, and one of the invites when some are not events."""
        found = await self._get_events([event_id for _, event_id in queued])
        stored = [found[event_id] for _, event_id in queued if event_id in found]
        events = {
            e.pdu.event_id: c for e, c in zip(stored, await self._serialize(stored), strict=True)
        }
        others = [position for position, event_id in queued if event_id not in found]
        invites = await self._invites_at(others) if others else {}
        now = int(self._clock() * 1000)
        out = []
        for position, event_id in queued:
            if event_id in events:
                out.append(events[event_id])
            elif (invite := invites.get(position)) is not None and invite.event_id == event_id:
                out.append(_invite_event(invite, now))
        return out


def _invite_event(invite: InviteEvent, now: int) -> JsonDict:
    pdu = Pdu(invite.pdu, invite.event_id, KNOWN_ROOM_VERSIONS[invite.room_version])
    unsigned = {
        "age": max(0, now - pdu.origin_server_ts),
        "invite_room_state": invite.invite_state,
    }
    return client_event(pdu, unsigned=unsigned)
