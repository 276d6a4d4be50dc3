"""What happens after a group commit: wake exactly the local users who can see the new
events (DESIGN.md, "Sync"), or roll caches back on failure."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from peyvand.events.redaction import redaction_takes_effect
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, ServerName, UserID


class EventDispatcher:
    def __init__(
        self, server_name: ServerName, state: StateService, index: RoomIndex, notifier: Notifier
    ) -> None:
        self._server_name = server_name
        self._state = state
        self._index = index
        self._notifier = notifier
        # Told of every committed batch after local users are woken (the federation
        # sender, to send what the batch queued).
        self.listeners: list[Callable[[Sequence[EventToPersist]], None]] = []

    async def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        self._index.apply(batch)
        users: set[UserID] = set()
        rooms: set[RoomID] = set()
        for persisted in batch:
            pdu = persisted.pdu
            if pdu.type == "m.room.redaction" and (redacts := pdu.redacts) is not None:
                self._redacted(persisted, redacts)
            rooms.add(pdu.room_id)
            if pdu.type == "m.room.member" and pdu.state_key:
                users.add(UserID(pdu.state_key))
        # The local members joined once the batch is applied, once per room, as the
        # snapshot keeps them (read in place by the notifier, which walks them or its
        # waiters, whichever are fewer): a message to a big room copies no member list.
        local_members = [
            snapshot.joined_on_view(self._server_name)
            for room_id in rooms
            if (snapshot := self._state.cached_room(room_id)) is not None
        ]
        newest = max(e.stream_ordering for e in batch)  # backfilled events count down
        self._notifier.advance(Stream.EVENTS, newest, users, local_members)
        for listener in self.listeners:
            listener(batch)

    def on_remote_membership(
        self, user_id: UserID, room_id: RoomID, membership: str, stream: int
    ) -> None:
        """An invite to, a knock on, or the rejection of either, of a room this server is
        not in, stored at ``stream`` apart from the room's events: the room index and
        the user's /sync are told."""
        self._index.note_remote_invite(user_id, room_id, membership, stream)
        self._notifier.advance(Stream.EVENTS, stream, {user_id})

    def _redacted(self, redaction: EventToPersist, target: EventID) -> None:
        """Count a committed redaction and mark ``target`` redacted in the event cache
        exactly where the commit marked it (``storage.events``): by the same rule over
        the same event. An original that is not cached is read from storage as the
        commit left it; nothing is read here (this runs before waiters wake)."""
        original = self._state.cached_event(target)
        if original is not None and not redaction_takes_effect(
            redaction.pdu,
            by_power=redaction.redaction_by_power,
            original_room_id=original.pdu.room_id,
            original_sender=original.pdu.sender,
            original_type=original.pdu.type,
        ):
            return
        self._state.mark_redacted(target, redaction.pdu.event_id)

    async def on_failed(self, batch: Sequence[EventToPersist]) -> None:
        """Events that were not stored: their rooms reload from the database, and the
        events leave the cache (a resent federation event is otherwise taken as known)."""
        for room_id in {e.pdu.room_id for e in batch}:
            self._state.forget_room(room_id)
        self._state.forget_events(e.pdu.event_id for e in batch)
