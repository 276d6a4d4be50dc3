"""Device list tracking (End-to-End Encryption, "Tracking the device list for a user").

A client keeps the device lists of every user it shares an encrypted room with; the
server tells it whom to re-query. ``notify_user_changed`` records a change of a user's
devices or keys at a new position of the device_lists stream and wakes the syncs of
the user and of everyone sharing a room with them. An incremental /sync (and
``GET /keys/changes``) then reports:

- ``changed``: users sharing a room with the syncing user whose devices changed in
  ``(since, now]``, and users who newly share a room with them (someone joined one of
  their rooms, or they joined someone's: then all its members, the user herself too, as
  Synapse does; the spec's note lets a server over-report here);
- ``left``: users who no longer share any room with them (after a leave, kick or ban).

Only the user's own rooms are looked at, and the recent part of the stream is kept in
memory, so a sync whose token is current reads nothing.

Remote users' changes (received over federation) are recorded with the same
``notify_user_changed``. ``device_listeners`` hear a local user's new and deleted devices,
to send them to the servers sharing a room with the user.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream, StreamToken
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.device_lists import REPLACED_UNKNOWN, DeviceListStore, MembershipChange
from peyvand.types import RoomID, ServerName, UserID, server_name_of

# Recent changes kept in memory; older ranges are read from the database.
MAX_LOGGED_CHANGES = 10_000
_LEFT = ("leave", "ban")
# The memberships whose users a member's devices are encrypted for (as Synapse's
# ``get_user_ids_changed``: the invited and knocking too).
_PRESENT = ("join", "invite", "knock")

# Called with (user, device IDs) after a local user's devices were created or deleted.
DevicesListener = Callable[[UserID, Sequence[str]], Awaitable[None]]
# Called with each user whose device list changed (application services, MSC3202).
ChangeHook = Callable[[UserID], None]


@dataclass(frozen=True, slots=True)
class DeviceListChanges:
    changed: list[UserID] = field(default_factory=list)
    left: list[UserID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.left)

    def to_json(self) -> dict[str, list[UserID]]:
        return {"changed": self.changed, "left": self.left}


class DeviceListService:
    def __init__(
        self,
        server_name: ServerName,
        store: DeviceListStore,
        index: RoomIndex,
        state: StateService,
        notifier: Notifier,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._index = index
        self._state = state
        self._notifier = notifier
        self._position = 0
        self._write_lock = asyncio.Lock()
        # The changes after ``_log_floor``, in stream order.
        self._log_positions: list[int] = []
        self._log_users: list[UserID] = []
        # The one user a change is told to, if not everyone (see notify_user_changed).
        self._log_only_to: list[UserID | None] = []
        self._log_floor = 0
        self.device_listeners: list[DevicesListener] = []
        self.change_hooks: list[ChangeHook] = []

    async def start(self) -> None:
        """Resume the stream at its stored position."""
        self._position = self._log_floor = await self._store.get_max_position()
        self._notifier.advance(Stream.DEVICE_LISTS, self._position, ())

    async def stored_position(self) -> int:
        """The stream's position in the database, whichever process wrote it (a
        deployment's ``StreamRelay`` compares it with this process's: issue 21)."""
        return await self._store.get_max_position()

    async def notify_user_changed(self, user_id: UserID, *, only_to: UserID | None = None) -> None:
        """Record that ``user_id``'s devices or keys changed (a new or deleted device, new
        device or cross-signing keys) and wake everyone who tracks them.

        ``only_to``: a change only that user is told of, as Synapse does: the user's own new
        user-signing key (which others never see), or another user's key signed by this
        user's user-signing key (which only the signer sees). Changes older than the
        in-memory log are read from the store, which does not keep this distinction: such
        an old change may then be reported to others too (harmless: they query the keys
        again and find nothing new)."""
        if only_to is not None:
            wake = {only_to}
        else:
            wake = await self._local_room_peers(user_id)
            wake.add(user_id)
        async with self._write_lock:
            position = await self._store.add_change(user_id, self._position)
            if position > self._position + 1:
                # Another process recorded changes in between that the log here lacks:
                # they are read from the store (as ``written_elsewhere``).
                self._log_floor = max(self._log_floor, position - 1)
            self._position = position
            self._log_positions.append(position)
            self._log_users.append(user_id)
            self._log_only_to.append(only_to)
            if len(self._log_positions) > MAX_LOGGED_CHANGES:
                cut = len(self._log_positions) // 2
                self._log_floor = self._log_positions[cut - 1]
                del self._log_positions[:cut], self._log_users[:cut], self._log_only_to[:cut]
            self._notifier.advance(Stream.DEVICE_LISTS, position, wake)
        for hook in self.change_hooks:
            hook(user_id)

    def written_elsewhere(self, position: int, _users: Collection[str] | None) -> None:
        """Another process of a deployment recorded a change at ``position`` (a
        ``StreamRelay`` refresh hook, issue 21): the log here does not have it, so
        changes up to there are read from the store from now on."""
        if position > self._log_floor:
            self._position = max(self._position, position)
            self._log_floor = position
            cut = bisect.bisect_right(self._log_positions, position)
            del self._log_positions[:cut], self._log_users[:cut], self._log_only_to[:cut]

    async def on_devices_deleted(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """A deleted device is a device list change ("Tracking the device list")."""
        await self.notify_user_changed(user_id)
        for listener in self.device_listeners:
            await listener(user_id, device_ids)

    async def on_device_created(self, user_id: UserID, device_id: str) -> None:
        """A new login is a device list change, and so is a renamed device (its display
        name is in what ``/keys/query`` answers; Synapse reports it too)."""
        await self.notify_user_changed(user_id)
        for listener in self.device_listeners:
            await listener(user_id, [device_id])

    async def changes(
        self, user_id: UserID, since: StreamToken, now: StreamToken
    ) -> DeviceListChanges:
        """``device_lists`` of an incremental /sync from ``since`` to ``now`` (also the
        answer of ``GET /keys/changes?from=since&to=now``)."""
        if now.device_lists <= since.device_lists and now.events <= since.events:
            return DeviceListChanges()
        # A copy: commits update the index while this awaits.
        memberships = dict(await self._index.memberships(user_id))
        joined = {r for r, (m, _) in memberships.items() if m == "join"}
        changed: set[UserID] = set()
        if now.device_lists > since.device_lists:
            public, told = await self._changed_between(
                since.device_lists, now.device_lists, user_id
            )
            changed |= told
            for other in public:
                if other == user_id or await self._shares_room(joined, other):
                    changed.add(other)
        maybe_left: set[UserID] = set()
        if now.events > since.events:
            # The rooms whose member event of the user's moved (newly joined only where
            # one of them joined from no join: a profile change is none, as Synapse) and
            # those where others' did, read together.
            moved = {r for r in joined if memberships[r][1] > since.events}
            others = await self._index.rooms_with_membership_changes_since(
                sorted(joined - moved), since.events
            )
            wanted = moved | others
            found = (
                await self._store.get_membership_changes(sorted(wanted), since.events, now.events)
                if wanted
                else []
            )
            newly_joined = {
                room_id
                for room_id, member, membership, replaced in found
                if member == user_id and membership == "join" and replaced != "join"
            }
            for room_id in newly_joined:
                # The user herself included, as Synapse: her other devices now share
                # the room with this one.
                changed |= await self._joined_members(room_id)
            for room_id, (membership, position) in memberships.items():
                if membership in _LEFT and position > since.events:
                    maybe_left |= await self._joined_members(room_id)
            arrived, gone = _present_changes(c for c in found if c[0] not in newly_joined)
            changed |= arrived - {user_id}
            maybe_left |= gone
        left = {
            other for other in maybe_left - {user_id} if not await self._shares_room(joined, other)
        }
        return DeviceListChanges(sorted(changed - left), sorted(left))

    async def keys_changes(
        self, user_id: UserID, from_token: StreamToken, to_token: StreamToken | None
    ) -> DeviceListChanges:
        """``GET /keys/changes``: as ``device_lists`` of /sync between the two tokens
        (``to`` defaults to the current position, as in Synapse)."""
        return await self.changes(user_id, from_token, to_token or self._notifier.current_token)

    async def _changed_between(
        self, after: int, until: int, viewer: UserID
    ) -> tuple[Collection[UserID], set[UserID]]:
        """Users who changed in ``(after, until]``: those everyone sharing a room is told
        of, and those told to ``viewer`` alone."""
        if after < self._log_floor:
            return await self._store.get_changed_users(after, until), set()
        start = bisect.bisect_right(self._log_positions, after)
        end = bisect.bisect_right(self._log_positions, until)
        public: set[UserID] = set()
        told: set[UserID] = set()
        entries = zip(self._log_users[start:end], self._log_only_to[start:end], strict=True)
        for user, only_to in entries:
            if only_to is None:
                public.add(user)
            elif only_to == viewer:
                told.add(user)
        return public, told

    async def _shares_room(self, joined: set[RoomID], other: UserID) -> bool:
        memberships = await self._index.memberships(other)
        return any(m == "join" and r in joined for r, (m, _) in memberships.items())

    async def _joined_members(self, room_id: RoomID) -> set[UserID]:
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            return set()
        return {u for u, m in snapshot.memberships.items() if m == "join"}

    async def _local_room_peers(self, user_id: UserID) -> set[UserID]:
        """The local users joined to any room ``user_id`` is joined to."""
        peers: set[UserID] = set()
        for room_id, (membership, _) in dict(await self._index.memberships(user_id)).items():
            if membership == "join":
                peers |= await self._joined_members(room_id)
        return {u for u in peers if server_name_of(u) == self._server_name}


def _present_changes(changes: Iterable[MembershipChange]) -> tuple[set[UserID], set[UserID]]:
    """The users a room's member events in ``changes`` (oldest first) last brought into
    it, and those they last took out of it (a user may be in both, by two rooms), as
    Synapse's ``get_user_ids_changed`` and /sync's ``calculate_user_changes``: into a
    room is joined, invited or knocking from none of these, or joined from an invite or
    knock (the device changes of the invited are not told, ``_shares_room``); out of it
    the other way, or from a membership held nowhere. A profile change is neither."""
    last: dict[tuple[RoomID, UserID], bool] = {}
    for room_id, member, membership, replaced in changes:
        if membership in _PRESENT:
            if replaced not in _PRESENT or (membership == "join" and replaced != "join"):
                last[(room_id, member)] = True
        elif replaced in _PRESENT or replaced == REPLACED_UNKNOWN:
            last[(room_id, member)] = False
    arrived = {member for (_, member), into in last.items() if into}
    gone = {member for (_, member), into in last.items() if not into}
    return arrived, gone
