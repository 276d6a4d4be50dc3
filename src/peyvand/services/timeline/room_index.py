"""Which rooms each local user is in, and where each room's event stream is, in memory.

DESIGN.md, "Sync": a woken sync must cost O(what changed for this user). With this index
it learns the user's rooms and which of them have new events without a query; the
dispatcher keeps it current after every commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from peyvand.lru import LRU
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.types import RoomID, UserID

# room_id -> (membership, stream ordering of that membership event)
Memberships = dict[RoomID, tuple[str, int]]


class RoomIndex:
    def __init__(
        self,
        store: EventStore,
        remote_invites: RemoteInviteStore | None = None,
        *,
        max_users: int = 100_000,
        starts_at: int | None = None,
    ) -> None:
        """``starts_at``: the events position this process starts from, when not the
        highest stored one (a process following another's writes starts from the
        writer's: ``event_follower.followed_position``)."""
        self._store = store
        self._starts_at = starts_at
        self._remote_invites = remote_invites
        self._memberships: LRU[UserID, Memberships] = LRU(max_users)
        # A token per cached user, dropped whenever their memberships change or are
        # reloaded, handed out anew when asked (``versioned_memberships``).
        self._tokens: LRU[UserID, int] = LRU(max_users)
        self._last_token = 0
        # Bumped on every membership change: a load that raced one is not cached.
        self._version = 0
        self._last_position: dict[RoomID, int] = {}
        # The last membership change of each room since start-up (device list tracking).
        self._last_membership: dict[RoomID, int] = {}
        self._startup_position = 0

    async def start(self) -> None:
        starts_at = self._starts_at
        if starts_at is None:
            starts_at = await self._store.get_max_stream_ordering()
        self._startup_position = starts_at

    async def memberships(self, user_id: UserID) -> Memberships:
        """``user_id``'s membership in every room (from the database on first use)."""
        cached = self._memberships.get(user_id)
        if cached is not None:
            return cached
        version = self._version
        loaded = await self._store.get_memberships_for_user(user_id)
        if self._remote_invites is not None:
            for room_id, membership in (await self._remote_invites.memberships_of(user_id)).items():
                # The newer wins: an invite to a room this server left is newer than the
                # leave its old state still shows.
                if room_id not in loaded or membership[1] > loaded[room_id][1]:
                    loaded[room_id] = membership
        if version == self._version:
            self._memberships.put(user_id, loaded)
            self._tokens.pop(user_id)
        return loaded

    async def memberships_at(self, user_id: UserID, position: int) -> Memberships:
        """``user_id``'s memberships as of the events stream's ``position`` (a sync's
        token): those loaded or changed past it (stored, not yet announced here: a remote
        invite stored in its own transaction, or, in a deployment, the event writer's
        commits a reader has not followed yet) are read as they were at ``position``; a
        room the user had no membership of then is left out. A copy, whatever it holds."""
        memberships = dict(await self.memberships(user_id))
        ahead = [room_id for room_id, (_, stream) in memberships.items() if stream > position]
        if not ahead:
            return memberships
        before = await self._store.get_memberships_at(user_id, ahead, position)
        for room_id in ahead:
            if room_id in before:
                memberships[room_id] = before[room_id]
            else:
                del memberships[room_id]
        return memberships

    async def versioned_memberships(self, user_id: UserID) -> tuple[Memberships, int | None]:
        """``memberships`` and a token that stays the same until they change, so a
        caller can keep what it derived from them (sliding sync's room lists); None when
        they are not cached (a load that raced a change): nothing derived may be kept."""
        memberships = await self.memberships(user_id)
        if self._memberships.peek(user_id) is not memberships:
            return memberships, None
        token = self._tokens.get(user_id)
        if token is None:
            self._last_token += 1
            token = self._last_token
            self._tokens.put(user_id, token)
        return memberships, token

    @property
    def exact_from(self) -> int:
        """The events position from which ``newest_positions`` is exact (start-up's)."""
        return self._startup_position

    @property
    def newest_positions(self) -> Mapping[RoomID, int]:
        """Each room written to since start-up: the position of its newest event (held,
        not copied). A room not in it has no events after ``exact_from``."""
        return self._last_position

    async def rooms_changed_since(self, room_ids: Sequence[RoomID], since: int) -> set[RoomID]:
        """The rooms of ``room_ids`` that may have events after ``since``.

        Exact for positions since start-up; before that, rooms not written to since
        start-up are asked of the database.
        """
        changed = {r for r in room_ids if self._last_position.get(r, -1) > since}
        if since < self._startup_position:
            unknown = [r for r in room_ids if r not in self._last_position]
            if unknown:
                changed |= await self._store.get_rooms_with_events_since(
                    unknown, since, self._startup_position
                )
        return changed

    async def rooms_with_membership_changes_since(
        self, room_ids: Sequence[RoomID], since: int
    ) -> set[RoomID]:
        """The rooms of ``room_ids`` that may have membership changes after ``since``
        (exact since start-up; before that, every room that may have events)."""
        if since < self._startup_position:
            return await self.rooms_changed_since(room_ids, since)
        return {r for r in room_ids if self._last_membership.get(r, -1) > since}

    def note_remote_invite(
        self, user_id: UserID, room_id: RoomID, membership: str, stream_ordering: int
    ) -> None:
        """An invite to, a knock on, or the rejection of either, of a room this server is
        not in. A leave of a room the user was never shown in (the rejection of a held
        invite, a message request) is not news and is left out, as reloading would."""
        self._version += 1
        cached = self._memberships.get(user_id)
        if cached is not None:
            current = cached.get(room_id)
            if current is None and membership == "leave":
                return
            if current is None or current[0] in ("invite", "knock", "leave", "ban"):
                cached[room_id] = (membership, stream_ordering)
                self._tokens.pop(user_id)

    def apply(self, batch: Sequence[EventToPersist]) -> None:
        """Record a committed batch (called by the dispatcher)."""
        for persisted in batch:
            pdu = persisted.pdu
            if persisted.stream_ordering < 0:
                continue  # backfilled history: not news
            self._last_position[pdu.room_id] = persisted.stream_ordering
            changes: list[tuple[UserID, str | None]]
            if persisted.current_state_changes is not None:
                # At a fork: current state may move by more (or less) than the event
                # itself; a member key removed (a state reset) leaves no membership.
                changes = [
                    (UserID(key[1]), membership if event_id is not None else None)
                    for key, event_id, membership in persisted.current_state_changes
                    if key[0] == "m.room.member" and (membership is not None or event_id is None)
                ]
            elif pdu.type == "m.room.member" and pdu.state_key and pdu.membership is not None:
                changes = [(UserID(pdu.state_key), pdu.membership)]
            else:
                continue
            if not changes:
                continue
            self._last_membership[pdu.room_id] = persisted.stream_ordering
            self._version += 1
            for user_id, membership in changes:
                cached = self._memberships.get(user_id)
                if cached is None:
                    continue
                if membership is None:
                    cached.pop(pdu.room_id, None)
                else:
                    cached[pdu.room_id] = (membership, persisted.stream_ordering)
                self._tokens.pop(user_id)
