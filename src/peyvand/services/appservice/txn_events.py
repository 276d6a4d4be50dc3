"""The events of an application-service transaction in the client format (Application
Service API, "Pushing events": "A list of events, formatted as per the Client-Server
API"): stored events as ``/sync`` and ``/messages`` serialise them (``unsigned.age``,
``prev_content``, redacted as they are now, ...), and invites from other servers to
rooms this server is not in, kept apart from the events (migration 018), as their
invite event with ``unsigned.invite_room_state``.

An invite or a knock of the timeline carries the room's stripped state at the event too
(``unsigned.invite_room_state`` / ``unsigned.knock_room_state``, Client-Server API,
"Stripped state"; as Synapse serialises them for appservices), so a bridge's bot sees
the room's name, encryption and type before it decides to join."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.events.serialize import client_event, stripped_state_event, well_formed_stripped_state
from peyvand.services.timeline.room_state import STRIPPED_STATE_TYPES, StateService
from peyvand.storage.appservice_txns import InviteEvent
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, JsonDict

__all__ = ["TransactionEvents"]

Serialize = Callable[[Sequence[StoredEvent]], Awaitable[list[JsonDict]]]
InvitesAt = Callable[[Sequence[int]], Awaitable[Mapping[int, InviteEvent]]]


class TransactionEvents:
    def __init__(
        self,
        state: StateService,
        serialize: Serialize,
        invites_at: InvitesAt,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._serialize = serialize
        self._invites_at = invites_at
        self._clock = clock

    async def load(self, queued: Sequence[tuple[int, EventID]]) -> list[JsonDict]:
        """The client events of ``queued`` (stream position, event ID), in that order;
        those gone since (purged, an invite rejected) are left out. One read of the
        events, and one of the invites when some are not events."""
        found = await self._state.get_events([event_id for _, event_id in queued])
        stored = [found[event_id] for _, event_id in queued if event_id in found]
        events = {
            e.pdu.event_id: c for e, c in zip(stored, await self._serialize(stored), strict=True)
        }
        await self._add_stripped_state(stored, events)
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

    async def _add_stripped_state(
        self, stored: Sequence[StoredEvent], events: dict[EventID, JsonDict]
    ) -> None:
        """Put the stripped state at each invite or knock of ``stored`` into its client
        event's ``unsigned``: the state keys per state group, then every event at once."""
        wanted = [
            e
            for e in stored
            if e.pdu.type == "m.room.member" and (e.pdu.membership or "") in _STRIPPED_KEY
        ]
        if not wanted:
            return
        senders: dict[int, set[str]] = {}
        for event in wanted:
            senders.setdefault(event.state_group, set()).add(event.pdu.sender)
        at_group: dict[int, dict[StateKey, EventID]] = {}
        for group, users in senders.items():
            keys: list[StateKey] = [(t, "") for t in STRIPPED_STATE_TYPES]
            keys.extend(("m.room.member", u) for u in users)
            at_group[group] = await self._state.state_ids_at_group(group, keys)
        keyed = {
            e.pdu.event_id: {
                k: i
                for k, i in at_group[e.state_group].items()
                if k[0] != "m.room.member" or k[1] == e.pdu.sender
            }
            for e in wanted
        }
        pdus = await self._state.get_pdus({i for ids in keyed.values() for i in ids.values()})
        for event in wanted:
            stripped = [
                stripped_state_event(p)
                for i in keyed[event.pdu.event_id].values()
                if (p := pdus.get(i)) is not None
            ]
            unsigned = events[event.pdu.event_id].setdefault("unsigned", {})
            unsigned[_STRIPPED_KEY[event.pdu.membership or ""]] = stripped


# The ``unsigned`` key of the stripped state of a member event, by membership.
_STRIPPED_KEY: Final = {"invite": "invite_room_state", "knock": "knock_room_state"}


def _invite_event(invite: InviteEvent, now: int) -> JsonDict:
    pdu = Pdu(invite.pdu, invite.event_id, KNOWN_ROOM_VERSIONS[invite.room_version])
    unsigned = {
        "age": max(0, now - pdu.origin_server_ts),
        "invite_room_state": well_formed_stripped_state(invite.invite_state),
    }
    return client_event(pdu, unsigned=unsigned)
