"""The rooms a user's sliding sync lists hold, in list order (MSC4186 "Lists"; Synapse
1.163's ``filter_membership_for_sync`` and ``sort_rooms``), kept per user between
requests.

Listing and sorting a user's 1,000 rooms for each request would cost O(rooms) of Python
for a 20-room window. So each user's listed rooms are held in list order
(``RoomOrder``), rebuilt only when the user's memberships changed (the room index's
token) or their forgotten rooms did, and otherwise caught up with the rooms whose newest
event moved since (the bump stamps' log; rebuilt when the log no longer reaches back).
An unfiltered window is then a slice and its ``count`` a length: a request costs
O(window + rooms moved). Users held are bounded in number and in rooms held.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from peyvand.lru import LRU
from peyvand.services.rooms.visibility import IgnoredBy
from peyvand.services.sync.invite_state import InviteState
from peyvand.services.sync.sliding.bump_stamps import BumpStamps
from peyvand.services.sync.sliding.membership_senders import MembershipSenders
from peyvand.services.sync.sliding.room_lists import UserRoom, listed_rooms
from peyvand.services.sync.sliding.room_order import RoomOrder
from peyvand.services.timeline.room_index import Memberships, RoomIndex
from peyvand.types import RoomID, UserID

# Users whose rooms are held, and rooms held over all of them.
_USERS = 10_000
_ROOMS = 200_000
# Invites to rooms on other servers whose sender is remembered (read only for users who
# ignore someone).
_INVITERS = 10_000

# user -> the rooms they forgot.
Forgotten = Callable[[UserID], Awaitable[set[RoomID]]]


@dataclass(frozen=True, slots=True)
class ListedRooms:
    """What one request sees of the user's rooms. While it awaits, a joined room's
    position may move in ``rooms`` and ``order`` (a later request catching up), never
    which rooms they hold."""

    rooms: Mapping[RoomID, UserRoom]
    # ``rooms`` newest first.
    order: Sequence[RoomID]
    # The rooms the user is joined to.
    joined: frozenset[RoomID]
    # The rooms the user left themselves and did not forget (room -> the leave's
    # position), listed or not: a subscription may name one.
    left: Mapping[RoomID, int]


@dataclass(slots=True)
class _Held:
    """A user's listed rooms, as of the room index's ``token`` and the bump stamps'
    log up to ``logged``."""

    token: int | None
    logged: int
    # The rooms always listed (every membership but the user's own leaves).
    rooms: dict[RoomID, UserRoom]
    order: RoomOrder
    joined: frozenset[RoomID]
    invites: tuple[RoomID, ...]
    # (position, room) of each room the user left (listed only after the leave), and
    # the same by room.
    left: list[tuple[int, RoomID]]
    left_at: dict[RoomID, int]
    # The newest membership position (a request before it sees fewer rooms).
    newest: int


class UserRooms:
    def __init__(
        self,
        index: RoomIndex,
        bump_stamps: BumpStamps,
        forgotten: Forgotten,
        senders: MembershipSenders,
        *,
        ignored_by: IgnoredBy,
        invites: InviteState,
        users: int = _USERS,
        rooms: int = _ROOMS,
    ) -> None:
        """``ignored_by`` and ``invites`` (who sent an invite) hide the invites of users
        the user ignores."""
        self._index = index
        self._bump_stamps = bump_stamps
        self._forgotten = forgotten
        self._senders = senders
        self._ignored_by = ignored_by
        self._invites = invites
        self._max_users = users
        self._max_rooms = rooms
        self._held: LRU[UserID, _Held] = LRU(users + 1)
        self._rooms_held = 0
        # Counts changes of forgotten rooms: a build or read that raced one is not kept.
        self._forgets = 0
        self._forgotten_held: LRU[UserID, frozenset[RoomID]] = LRU(users)
        # (user, room, invite position) -> who sent the invite to a room on another server.
        self._inviters: LRU[tuple[UserID, RoomID, int], tuple[str | None]] = LRU(_INVITERS)

    def forgotten_changed(self, user_id: UserID) -> None:
        """``user_id`` forgot a room, or one is no longer forgotten (after the write)."""
        self._forgets += 1
        self._forgotten_held.pop(user_id)
        self._drop(user_id)

    def forgotten_elsewhere(self, user_ids: Collection[str] | None) -> None:
        """Another process of a deployment wrote these users' forgotten rooms (None:
        anyone's; ``ForgottenRoomStore.elsewhere_listeners``, issue 21)."""
        users = list(self._forgotten_held) if user_ids is None else user_ids
        for user_id in users:
            self.forgotten_changed(UserID(user_id))

    async def listed(self, user_id: UserID, since: int | None, until: int) -> ListedRooms:
        """The rooms lists may show at stream position ``until`` to a connection at
        ``since`` (None: a new one): the held ones, with the rooms the user left after
        ``since`` and without the invites of users they ignore."""
        memberships, token = await self._index.versioned_memberships(user_id)
        held = self._held.get(user_id)
        if held is not None and (token != held.token or not self._catch_up(held)):
            self._drop(user_id)
            held = None
        if held is None:
            held = await self._build(user_id, memberships, token)
        if held.newest > until:
            # Memberships newer than the request's token (committed while it started):
            # left out, as if not yet seen.
            seen = {r: m for r, m in memberships.items() if m[1] <= until}
            held = await self._build(user_id, seen, None)
        left: dict[RoomID, int] = {}
        if since is not None:
            start = bisect_right(held.left, since, key=_position)
            end = bisect_right(held.left, until, key=_position)
            left = {room_id: position for position, room_id in held.left[start:end]}
        hidden = await self._hidden_invites(user_id, held)
        if not left and not hidden:
            return ListedRooms(held.rooms, held.order.ids, held.joined, held.left_at)
        rooms = {r: room for r, room in held.rooms.items() if r not in hidden}
        rooms.update((r, UserRoom(r, "leave", p, p)) for r, p in left.items())
        return ListedRooms(
            rooms, held.order.merged(left.items(), hidden), held.joined, held.left_at
        )

    def _catch_up(self, held: _Held) -> bool:
        """Moves the held joined rooms whose newest event moved since ``held`` was last
        caught up; False when the log no longer reaches back (to rebuild)."""
        moves = self._bump_stamps.moved_since(held.logged)
        if moves is None:
            return False
        held.logged += len(moves)
        rooms = held.rooms
        for room_id, position in moves:
            room = rooms.get(room_id)
            if room is not None and room.membership == "join" and position > room.bump_stamp:
                rooms[room_id] = UserRoom(room_id, "join", room.membership_position, position)
                held.order.move(room_id, room.bump_stamp, position)
        return True

    async def _build(self, user_id: UserID, memberships: Memberships, token: int | None) -> _Held:
        """The user's listed rooms from their ``memberships`` (kept when ``token`` says
        they are current): the bump stamps of the joined ones from memory (rooms not
        seen since start-up read together); the forgotten rooms only when a left or
        banned room is among them, and who sent each leave once per leave."""
        # A copy, and the log's mark before any await: the index and the log move on
        # while this awaits (what moved after the mark is caught up with next time).
        memberships = dict(memberships)
        logged = self._bump_stamps.logged
        forgets = self._forgets
        joined = [r for r, (membership, _) in memberships.items() if membership == "join"]
        stamps = await self._bump_stamps.stamps(joined)
        left = {r: p for r, (m, p) in memberships.items() if m == "leave"}
        forgotten: frozenset[RoomID] = frozenset()
        if left or any(m == "ban" for m, _ in memberships.values()):
            forgotten = await self._forgotten_rooms(user_id)
            left = {r: p for r, p in left.items() if r not in forgotten}
        kicked = await self._kicked(user_id, left) if left else set()
        rooms = listed_rooms(memberships, stamps, forgotten=forgotten, kicked=kicked)
        held = _Held(
            token=token,
            logged=logged,
            rooms=rooms,
            order=RoomOrder((r.room_id, r.bump_stamp) for r in rooms.values()),
            joined=frozenset(r for r, room in rooms.items() if room.membership == "join"),
            invites=tuple(r for r, room in rooms.items() if room.membership == "invite"),
            left=sorted((p, r) for r, p in left.items() if r not in kicked),
            left_at={r: p for r, p in left.items() if r not in kicked},
            newest=max((p for _, p in memberships.values()), default=0),
        )
        if token is not None and forgets == self._forgets:
            self._keep(user_id, held)
        return held

    async def _forgotten_rooms(self, user_id: UserID) -> frozenset[RoomID]:
        """The rooms ``user_id`` forgot (read once until they change)."""
        held = self._forgotten_held.get(user_id)
        if held is None:
            forgets = self._forgets
            held = frozenset(await self._forgotten(user_id))
            if forgets == self._forgets:
                self._forgotten_held.put(user_id, held)
        return held

    def _keep(self, user_id: UserID, held: _Held) -> None:
        """Holds ``held``, first dropping the least recently used users past a bound."""
        self._drop(user_id)
        size = _size(held)
        if size > self._max_rooms:
            return
        while len(self._held) >= self._max_users or self._rooms_held + size > self._max_rooms:
            oldest = self._held.oldest()
            if oldest is None:
                break
            self._drop(oldest[0])
        self._held.put(user_id, held)
        self._rooms_held += size

    def _drop(self, user_id: UserID) -> None:
        held = self._held.peek(user_id)
        if held is not None:
            self._held.pop(user_id)
            self._rooms_held -= _size(held)

    async def _kicked(self, user_id: UserID, left: Mapping[RoomID, int]) -> set[RoomID]:
        """The rooms of ``left`` (room -> position of the user's leave) whose leave was
        sent by someone else. A room whose member event is not held (a state reset, a
        rejected remote invite) counts as left, as in Synapse."""
        senders = await self._senders.senders(user_id, "leave", left)
        return {room_id for room_id, sender in senders.items() if sender != user_id}

    async def _hidden_invites(self, user_id: UserID, held: _Held) -> frozenset[RoomID]:
        """The invites from users ``user_id`` ignores ("Ignoring Users": not sent, as
        /sync and Synapse's ``get_room_membership_for_user_at_to_token``)."""
        if not held.invites or not (ignored := await self._ignored_by(user_id)):
            return frozenset()
        invites = {r: held.rooms[r].membership_position for r in held.invites}
        inviters: dict[RoomID, str | None] = dict(
            await self._senders.senders(user_id, "invite", invites)
        )
        for room_id in invites.keys() - inviters.keys():
            inviters[room_id] = await self._remote_inviter(user_id, room_id, invites[room_id])
        return frozenset(r for r, sender in inviters.items() if sender in ignored)

    async def _remote_inviter(self, user_id: UserID, room_id: RoomID, position: int) -> str | None:
        """Who sent the user's invite to a room this server holds no state of (read once
        per invite)."""
        key = (user_id, room_id, position)
        held = self._inviters.get(key)
        if held is not None:
            return held[0]
        sender = (await self._invites.stripped(room_id, user_id))[1]
        self._inviters.put(key, (sender,))
        return sender


def _position(left: tuple[int, RoomID]) -> int:
    return left[0]


def _size(held: _Held) -> int:
    """The entries a held user counts against the bound: listed rooms, invites and the
    rooms left (those not listed too)."""
    return len(held.rooms) + len(held.invites) + len(held.left)
