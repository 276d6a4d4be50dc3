"""What happens after a group commit: wake exactly the local users who can see the new
events (DESIGN.md, "Sync"), or roll caches back on failure.

Commits are announced in stream order (``StreamTracker``): a batch, or a remote
membership stored in its own transaction, is announced once every lower events position
has committed or been abandoned, so no reader is told of a position while a lower one is
still in flight (issue 21). The stream's position announced is the highest committed
one, the batch's own newest or the membership's, never ``persisted_upto``: that counts
abandoned positions, which no stored row holds, and a token naming one would be handed
out again after a restart (``EventCreationService.start`` continues after the highest
position stored, or deleted since by a purge or an erasure) to an event its holder would
never see.

With several event writers (issue 21), a writer's own commits are not the whole stream:
another writer may still have a lower position in flight. Each released commit is then
published at once (``advanced``) but told here only once every writer has passed it
(``held``: ``EventStreamFollower`` tells them, in position order with the others'
commits)."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peyvand.events.redaction import redaction_takes_effect
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.services.timeline.stream_tracker import EventPositions
from peyvand.storage.models import EventToPersist
from peyvand.storage.remote_invites import RemoteInvite
from peyvand.types import EventID, RoomID, ServerName, UserID


@dataclass(frozen=True, slots=True)
class OwnCommit:
    """What one released position of this writer tells: a committed ``batch`` (its
    newest at ``position``), or a remote ``membership`` (user, room, membership) stored
    at ``position``."""

    position: int
    batch: Sequence[EventToPersist] = ()
    membership: tuple[UserID, RoomID, str] | None = None


class HeldAnnouncements:
    """An event writer's released commits until every writer of the deployment has
    passed them (released in position order, so a queue)."""

    def __init__(self) -> None:
        self._held: deque[OwnCommit] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, commit: OwnCommit) -> None:
        self._held.append(commit)

    def upto(self, position: int) -> list[OwnCommit]:
        """What is held at or below ``position``, in position order: whole commits, and
        the part at or below it of a batch that reaches above (another writer's
        position may lie between a batch's events). Nothing is taken off
        (``drop_upto``)."""
        found = []
        for commit in self._held:
            if commit.position <= position:
                found.append(commit)
                continue
            part = [e for e in commit.batch if e.stream_ordering <= position]
            if part:
                found.append(OwnCommit(position, part))
            break
        return found

    def drop_upto(self, position: int) -> None:
        """Take off what ``upto(position)`` returned (told)."""
        held = self._held
        while held and held[0].position <= position:
            held.popleft()
        if held and held[0].batch:
            head = held[0]
            rest = [e for e in head.batch if e.stream_ordering > position]
            if len(rest) < len(head.batch):
                held[0] = OwnCommit(head.position, rest)


class EventDispatcher:
    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        index: RoomIndex,
        notifier: Notifier,
        positions: EventPositions,
    ) -> None:
        """``positions`` tracks the events positions that ``EventCreationService``
        allocates (the same tracker)."""
        self._server_name = server_name
        self._positions = positions
        self._state = state
        self._index = index
        self._notifier = notifier
        # Told of every committed batch after local users are woken (the federation
        # sender, to send what the batch queued).
        self.listeners: list[Callable[[Sequence[EventToPersist]], None]] = []
        # Told of each position this process releases (in a deployment: published to
        # the processes that follow the stream): committed, with nothing in flight below.
        self.advanced: list[Callable[[int], None]] = []
        # One of several event writers: what its commits tell waits here for the others.
        self.held: HeldAnnouncements | None = None

    async def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """A batch committed: redactions take effect in the event cache at once (as in
        storage); the rest is announced in stream order (``_announce``)."""
        self._redactions(batch)
        positions = [e.stream_ordering for e in batch if e.stream_ordering > 0]
        if not positions:
            # Backfilled events alone (negative positions, never new to /sync, not
            # tracked): told at once, the stream where it was.
            self._tell(batch, self._notifier.current_token.events, set())
            return
        newest = max(positions)
        self._finish(positions, newest, functools.partial(self._announce, batch, newest))

    def _finish(
        self, positions: Sequence[int], newest: int, wake: Callable[[], None] | None
    ) -> None:
        """Finish ``positions``, ``wake`` held by ``newest``, and run the wakes released."""
        released = []
        for position in positions:
            released += self._positions.finished(position, wake if position == newest else None)
        for announce in released:
            announce()

    def _announce(self, batch: Sequence[EventToPersist], position: int) -> None:
        """Tell the room index, /sync (its token moved to ``position``, the batch's
        newest) and the listeners of a committed batch, once no lower position is in
        flight."""
        self._released(OwnCommit(position, batch))

    def _released(self, commit: OwnCommit) -> None:
        """``commit``'s position is released: tell what it committed here (now, or once
        the other writers passed it), and publish it."""
        if self.held is None:
            self._tell_own(commit)
        else:
            self.held.hold(commit)
        for advanced in self.advanced:
            advanced(commit.position)

    def _tell_own(self, commit: OwnCommit) -> None:
        if commit.membership is None:
            self._tell(commit.batch, commit.position, set())
            return
        user_id, room_id, membership = commit.membership
        self._index.note_remote_invite(user_id, room_id, membership, commit.position)
        self._notifier.advance(Stream.EVENTS, commit.position, {user_id})

    def on_replicated(
        self,
        batch: Sequence[EventToPersist],
        invites: Sequence[RemoteInvite],
        up_to: int,
        own: Sequence[OwnCommit] = (),
    ) -> None:
        """Another process of the deployment committed ``batch`` and moved ``invites``
        (``services.timeline.event_follower`` read them, every position up to ``up_to``
        committed): redactions take effect in the event cache as storage applied them, then
        the room index, /sync and the listeners are told as of a local commit, with this
        writer's ``own`` commits up to ``up_to`` (one of several writers) merged in
        position order: told apart, a batch of this writer's spanning another writer's
        position would be told on one side of it, and a token taken in between would
        skip the other. The rooms' snapshots are the follower's to bring up to date
        first."""
        self._redactions(batch)
        users: set[UserID] = set()
        moves = [(i.stream_ordering, i.user_id, i.room_id, i.membership) for i in invites]
        if own:
            moves += [(c.position, *c.membership) for c in own if c.membership is not None]
            moves.sort()
        for stream, user_id, room_id, membership in moves:
            self._index.note_remote_invite(user_id, room_id, membership, stream)
            users.add(user_id)
        if own:
            batch = sorted(
                [*batch, *(e for commit in own for e in commit.batch)],
                key=lambda e: e.stream_ordering,
            )
        self._tell(batch, up_to, users)

    def _tell(self, batch: Sequence[EventToPersist], position: int, users: set[UserID]) -> None:
        """The room index, /sync (its token moved to ``position``, ``users`` woken with the
        batch's members and the local members of its rooms) and the listeners."""
        self._index.apply(batch)
        rooms: set[RoomID] = set()
        for persisted in batch:
            pdu = persisted.pdu
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
        self._notifier.advance(Stream.EVENTS, position, users, local_members)
        for listener in self.listeners:
            listener(batch)

    def on_remote_membership(
        self, user_id: UserID, room_id: RoomID, membership: str, stream: int
    ) -> None:
        """An invite to, a knock on, or the rejection of either, of a room this server is
        not in, stored at ``stream`` (allocated by ``EventCreationService``) apart from
        the room's events: the room index and the user's /sync are told, once no lower
        position is in flight."""

        commit = OwnCommit(stream, membership=(user_id, room_id, membership))
        for wake in self._positions.finished(stream, functools.partial(self._released, commit)):
            wake()

    def _redactions(self, batch: Sequence[EventToPersist]) -> None:
        """The batch's redactions take effect in the event cache (``_redacted``)."""
        for persisted in batch:
            pdu = persisted.pdu
            if pdu.type == "m.room.redaction" and (redacts := pdu.redacts) is not None:
                self._redacted(persisted, redacts)

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
        self._state.forget_events((e.pdu.event_id for e in batch), stored=False)
        # Their positions are abandoned: what waits behind them is announced.
        positions = [e.stream_ordering for e in batch if e.stream_ordering > 0]
        if positions:
            self._finish(positions, 0, None)
