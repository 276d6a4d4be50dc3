"""Per-connection state of simplified sliding sync (MSC4186, "Connection state").

A connection is (user, device, ``conn_id``). Its ``pos`` is ``<n>/<stream token>``, as
Synapse's ``SlidingSyncStreamToken``: ``n`` names what the connection had been sent
when that response was made (for each room, up to which event position and with which
``required_state``), so the next request answers only what is new to it. A request
from ``pos`` keeps that position and drops every other (Synapse's
``_get_per_connection_state_txn``), so a retry of a lost response sees the same answer
again; its answer is recorded under a new number, dropping nothing: a long-poll the
client abandoned may end after the client's next request was answered, and the position
of that answer must stay usable (at most ``MAX_POSITIONS_PER_CONNECTION``, oldest first).

Connections live in memory only, bounded in all and per user: after a restart, or once a
connection was evicted, its ``pos`` is unknown and the client is answered 400
``M_UNKNOWN_POS``, on which MSC4186 clients start the connection over cleanly.

A position that holds nothing (no room sent, no list, no room's extension status: a
connection of extensions alone, as Element X's encryption sync) is not stored: its
number is ``NOTHING_HELD`` (0), which names the empty position whatever the server holds,
so such a ``pos`` stays valid across restarts and evictions and a device-list change
after it is never lost to a restart (Synapse's connection position 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import StateKey
from peyvand.interned import Interned
from peyvand.services.sync.sliding.request import StatePair
from peyvand.services.sync.sliding.sent_rooms import RoomStatuses
from peyvand.services.sync.streams import StreamToken, parse_position_number
from peyvand.types import DeviceID, EventID, RoomID, UserID

# The number of a position that holds nothing (never stored).
NOTHING_HELD: Final = 0
# Connections held in all; the oldest unused is forgotten first.
MAX_CONNECTIONS = 10_000
# Connections held per user (devices times conn_ids: Element X opens one or two per
# device); a user's least recently used is forgotten first.
MAX_CONNECTIONS_PER_USER = 100
# Rooms remembered per connection position (those beyond were sent long ago: the
# oldest are forgotten and sent again as initial if they come back into view).
MAX_ROOMS_PER_CONNECTION = 5_000
# Positions held per connection between two requests that use one (answers of
# abandoned long-polls pile up only until the client's next request).
MAX_POSITIONS_PER_CONNECTION = 10

ConnectionKey = tuple[UserID, DeviceID, str]


@dataclass(frozen=True, slots=True, weakref_slot=True)
class SentRoom:
    """What the connection was last sent of a room (one object for equal ones held by
    any connection, ``SharedRooms``)."""

    # Its events up to this stream position.
    position: int
    # The user's membership it was sent with.
    membership: str
    # The ``required_state`` it was sent with, and the state events sent for it (the
    # ``$LAZY`` members included): a widened ``required_state`` sends what is missing,
    # a changed state event is sent again.
    required_state: frozenset[StatePair]
    state: Mapping[StateKey, EventID]
    # Name and avatar event, and (joined, invited, heroes): sent again when they change.
    name: EventID | None
    avatar: EventID | None
    members: tuple[object, ...]
    # The timeline_limit the client holds a page of (see ``rooms._sent_timeline_limit``).
    timeline_limit: int


@dataclass(frozen=True, slots=True)
class ConnectionPosition:
    """The connection as a response left it: each room sent, each list's windows."""

    rooms: Mapping[RoomID, SentRoom]
    lists: Mapping[str, object]
    # Per room extension (``account_data``, ``receipts``), what each room was sent of it.
    extensions: Mapping[str, RoomStatuses] = field(default_factory=dict)

    def holds_nothing(self) -> bool:
        """Whether it is the empty position (``NOTHING_HELD``)."""
        return not self.rooms and not self.lists and not any(self.extensions.values())


@dataclass(frozen=True, slots=True)
class Pos:
    """A parsed ``pos``: the connection position and the stream token."""

    connection: int
    token: StreamToken

    def serialize(self) -> str:
        return f"{self.connection}/{self.token.serialize()}"

    @classmethod
    def parse(cls, text: str) -> Pos:
        """M_UNKNOWN_POS when it is not one of ours, malformed too (Synapse answers a
        malformed one ``M_UNKNOWN``; a client starts over on ``M_UNKNOWN_POS``)."""
        number, _, token = text.partition("/")
        try:
            connection = parse_position_number(number)
            parsed = StreamToken.parse(token)
        except (ValueError, MatrixError):
            raise unknown_pos() from None
        return cls(connection, parsed)


class _Connection:
    __slots__ = ("positions",)

    def __init__(self) -> None:
        self.positions: dict[int, ConnectionPosition] = {}


# A user's connections by (device, conn_id), least recently used first.
_UserConnections = dict[tuple[DeviceID, str], _Connection]


class SharedRooms:
    """One ``SentRoom`` object for all the equal ones positions hold: a user's
    connections, and the members of a room, answered at one token were sent the same
    of it (issue 18: memory per connection). Held weakly: an object goes with the last
    position holding it."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: Interned[SentRoom] = Interned()

    def __len__(self) -> int:
        return len(self._held)

    def share(
        self,
        rooms: Mapping[RoomID, SentRoom],
        known: Mapping[RoomID, SentRoom],
        changed: Collection[RoomID] | None,
    ) -> dict[RoomID, SentRoom]:
        """``rooms``, each value not already ``known`` (the previous position's, held
        shared) replaced by the equal one held, if any. ``changed``, when given, holds
        every room whose value may not be ``known``'s: only those are looked at, so a
        response hashes what it answered, not every room the connection was ever sent
        (the map is still copied, in C)."""
        if changed is None:
            return {
                r: room if known.get(r) is room else self._one(room) for r, room in rooms.items()
            }
        shared = dict(rooms)
        for room_id in changed:
            room = shared.get(room_id)
            if room is not None and known.get(room_id) is not room:
                shared[room_id] = self._one(room)
        return shared

    def _one(self, room: SentRoom) -> SentRoom:
        key = hash(
            (
                room.position,
                room.membership,
                room.required_state,
                frozenset(room.state.items()),
                room.name,
                room.avatar,
                room.members,
                room.timeline_limit,
            )
        )
        return self._held.one(room, key)


class ConnectionStore:
    """Every open connection's positions, bounded in memory: at most ``max_per_user``
    connections of one user (a user's least recently used goes first, so one user
    opening connection after connection evicts only their own) and ``max_connections``
    in all (then the oldest connection of the least recently active user goes)."""

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        max_per_user: int = MAX_CONNECTIONS_PER_USER,
    ) -> None:
        self._max_connections = max_connections
        self._max_per_user = max_per_user
        # Users least recently active first; a dict's order is its insertion order.
        self._users: dict[UserID, _UserConnections] = {}
        self._count = 0
        # Position numbers are unique server-wide, so a pos never names the position
        # of another connection, even after the first is forgotten.
        self._numbers = itertools.count(1)
        self._shared = SharedRooms()

    def __len__(self) -> int:
        return self._count

    def start(self, key: ConnectionKey) -> ConnectionPosition:
        """A request without ``pos``: the connection starts over with nothing sent."""
        user_id, device_id, conn_id = key
        mine = self._users.get(user_id)
        if mine is not None and mine.pop((device_id, conn_id), None) is not None:
            self._count -= 1
            if not mine:
                del self._users[user_id]
        return ConnectionPosition({}, {})

    def resume(self, key: ConnectionKey, connection: int) -> ConnectionPosition:
        """The position ``connection`` of the connection, dropping every other; 400
        ``M_UNKNOWN_POS`` if it is not held (expired, evicted, or from before a
        restart). ``NOTHING_HELD`` is the empty position, the others left as they are."""
        if connection == NOTHING_HELD:
            return ConnectionPosition({}, {})
        held = self._use(key)
        position = held.positions.get(connection) if held is not None else None
        if held is None or position is None:
            raise unknown_pos()
        held.positions = {connection: position}
        return position

    def record(
        self,
        key: ConnectionKey,
        base: int | None,
        position: ConnectionPosition,
        *,
        changed: Collection[RoomID] | None = None,
    ) -> int:
        """Record what a response leaves the connection with; its new number. No other
        position is dropped (only a request that uses one drops the others, ``resume``):
        ``base``, the position the request came from, stays for a retry, and so does a
        newer one issued to a later request while this one was long-polling. ``changed``:
        the rooms of ``position`` that may differ from ``base``'s (None: any)."""
        held = self._use(key)
        if held is None:
            held = self._add(key)
        number = next(self._numbers)
        known = held.positions.get(base) if base is not None else None
        held.positions[number] = self._compact(_bounded(position), known, changed)
        while len(held.positions) > MAX_POSITIONS_PER_CONNECTION:
            oldest = next(k for k in held.positions if k != base)
            del held.positions[oldest]
        return number

    def _compact(
        self,
        position: ConnectionPosition,
        known: ConnectionPosition | None,
        changed: Collection[RoomID] | None,
    ) -> ConnectionPosition:
        """``position`` holding shared rooms (``SharedRooms``), and the ``known``
        position's mappings wherever they are equal (a response that changed nothing of
        them): what a connection holds costs memory only for what is its own."""
        if known is None:
            known = _NOTHING_SENT
        rooms = self._shared.share(position.rooms, known.rooms, changed)
        return ConnectionPosition(
            known.rooms if rooms == known.rooms else rooms,
            known.lists if position.lists == known.lists else position.lists,
            known.extensions if position.extensions == known.extensions else position.extensions,
        )

    def _use(self, key: ConnectionKey) -> _Connection | None:
        """The connection, now the most recently used (and its user the most recently
        active)."""
        user_id, device_id, conn_id = key
        mine = self._users.pop(user_id, None)
        if mine is None:
            return None
        self._users[user_id] = mine
        held = mine.pop((device_id, conn_id), None)
        if held is not None:
            mine[(device_id, conn_id)] = held
        return held

    def _add(self, key: ConnectionKey) -> _Connection:
        """A new connection, evicting the user's oldest past ``max_per_user`` and the
        least recently active user's oldest past ``max_connections``."""
        user_id, device_id, conn_id = key
        mine = self._users.setdefault(user_id, {})
        if len(mine) >= self._max_per_user:
            del mine[next(iter(mine))]
            self._count -= 1
        held = _Connection()
        mine[(device_id, conn_id)] = held
        self._count += 1
        while self._count > self._max_connections:
            oldest_user, theirs = next(iter(self._users.items()))
            del theirs[next(iter(theirs))]
            self._count -= 1
            if not theirs:
                del self._users[oldest_user]
        return held


# What a new connection was sent: nothing (read-only, shared).
_NOTHING_SENT = ConnectionPosition(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))


def _bounded(position: ConnectionPosition) -> ConnectionPosition:
    """At most ``MAX_ROOMS_PER_CONNECTION`` rooms, the most recently sent kept."""
    if len(position.rooms) <= MAX_ROOMS_PER_CONNECTION:
        return position
    newest = sorted(position.rooms.items(), key=lambda item: item[1].position, reverse=True)
    rooms = dict(newest[:MAX_ROOMS_PER_CONNECTION])
    # A room forgotten by an extension is sent all its data again.
    extensions = {
        name: {r: s for r, s in statuses.items() if r in rooms}
        for name, statuses in position.extensions.items()
    }
    return ConnectionPosition(rooms, position.lists, extensions)


def unknown_pos() -> MatrixError:
    return MatrixError(Errcode.UNKNOWN_POS, "Unknown position")
