"""Room state: cached current state per room, the event cache and historical state.

Historical state is a chain of state groups per room. The group at chain position ``k``
stores its delta against the group at position ``k - lowbit(k)`` (a Fenwick tree over the
room's state changes): a change writes amortised O(log n) rows, and the state at any
group is the overlay of at most log2(n) deltas, read in one query. Message events never
create a group; they point at their room's current one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any, Final

from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.redaction import redact_pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from peyvand.lru import LRU
from peyvand.services.timeline.stream_tracker import SOLE_WRITER, Lane
from peyvand.storage.events import EventStore
from peyvand.storage.models import NewStateGroup, StateGroupRow, StoredEvent
from peyvand.types import EventID, RoomID, ServerName, UserID, server_name_of

# m.room.member aside, the state shown with an invite or a knock (Client-Server API,
# "Stripped state").
STRIPPED_STATE_TYPES: Final = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)
_DELTA_CACHE_SIZE: Final = 20_000
_KEYED_CACHE_SIZE: Final = 200_000


# The chain position of a group holding a whole state (a room's first group, the state
# a join over federation starts from, a state that lost keys): a power of two, so its
# descendants' deltas, each against position ``seq - lowbit(seq)``, reach back to it and
# never copy it (at position 1, every power of two after it would).
_ROOT_SEQ: Final = 1 << 32


def _lowbit(n: int) -> int:
    return n & -n


# How many membership changes a room snapshot remembers for ``changed_since``.
_MEMBERSHIP_JOURNAL: Final = 4096

# How many times ``committed_room`` waits for a room's commits before it reads the head
# of a room written without a pause.
_COMMITTED_READ_WAITS: Final = 4


@dataclass
class RoomSnapshot:
    """What building the next event in a room needs, kept in memory.

    ``memberships`` is the room's current membership of each user; it changes only
    through ``set_membership``, which keeps the views every message needs (who is joined,
    which servers, each server's joined users) up to date in O(1) per change (issue 15:
    neither a message's fan-out nor a join may scan every member), and journals the
    change for ``changed_since``."""

    room_id: RoomID
    room_version: RoomVersion
    state: dict[StateKey, EventID]
    memberships: Mapping[UserID, str]
    extremities: list[EventID]
    depth: int
    state_group: StateGroupRow
    # Serialises event creation in this room (DESIGN.md: a per-room queue).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Bumped by each ``set_membership``.
    membership_seq: int = field(default=0, init=False)
    _members: dict[UserID, str] = field(init=False, repr=False)
    # Ordered sets (dicts to None): the joined users, and those of each server.
    _joined: dict[UserID, None] = field(init=False, repr=False)
    _on_server: dict[ServerName, dict[UserID, None]] = field(init=False, repr=False)
    _servers: frozenset[ServerName] | None = field(default=None, init=False, repr=False)
    _journal: deque[UserID] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._members = dict(self.memberships)
        self.memberships = self._members
        self._joined = {}
        self._on_server = {}
        self._journal = deque(maxlen=_MEMBERSHIP_JOURNAL)
        for user_id, membership in self._members.items():
            if membership == "join":
                self._add_joined(user_id)

    def set_membership(self, user_id: UserID, membership: str) -> None:
        """Record ``user_id``'s current membership (that of their m.room.member event
        now in ``state``, set again for a profile change). ``memberships`` lists the
        users in the order their member events were made current, the newest last."""
        was_joined = self._members.pop(user_id, None) == "join"
        self._members[user_id] = membership
        if membership == "join" and not was_joined:
            self._add_joined(user_id)
        elif membership != "join" and was_joined:
            self._remove_joined(user_id)
        self.membership_seq += 1
        self._journal.append(user_id)

    def drop_membership(self, user_id: UserID) -> None:
        """``user_id`` has no m.room.member event in ``state`` any more (a state reset):
        no membership at all, as a user who never had one."""
        if user_id not in self._members:
            return
        if self._members.pop(user_id) == "join":
            self._remove_joined(user_id)
        self.membership_seq += 1
        self._journal.append(user_id)

    def changed_since(self, seq: int) -> list[UserID] | None:
        """The users whose membership was set since ``membership_seq`` was ``seq``
        (in order, repeats included), or None if the journal no longer reaches back."""
        count = self.membership_seq - seq
        if count < 0 or count > len(self._journal):
            return None
        end = len(self._journal)
        return [self._journal[i] for i in range(end - count, end)]

    def _add_joined(self, user_id: UserID) -> None:
        self._joined[user_id] = None
        server = server_name_of(user_id)
        users = self._on_server.get(server)
        if users is None:
            self._on_server[server] = users = {}
            self._servers = None
        users[user_id] = None

    def _remove_joined(self, user_id: UserID) -> None:
        del self._joined[user_id]
        server = server_name_of(user_id)
        users = self._on_server[server]
        del users[user_id]
        if not users:
            del self._on_server[server]
            self._servers = None

    def joined_members(self) -> tuple[UserID, ...]:
        """The joined users (a copy: the caller may hold it across awaits)."""
        return tuple(self._joined)

    def joined_view(self) -> AbstractSet[UserID]:
        """The joined users read in place, not copied: it follows later changes."""
        return self._joined.keys()

    def joined_count(self) -> int:
        return len(self._joined)

    def is_joined(self, user_id: UserID) -> bool:
        return user_id in self._joined

    def joined_on(self, server_name: ServerName) -> tuple[UserID, ...]:
        """The joined users of ``server_name`` (a copy)."""
        return tuple(self._on_server.get(server_name, ()))

    def joined_on_view(self, server_name: ServerName) -> AbstractSet[UserID]:
        """The joined users of ``server_name`` read in place, not copied: valid until
        the membership next changes (to be used before any await)."""
        users = self._on_server.get(server_name)
        return frozenset() if users is None else users.keys()

    def joined_servers(self) -> frozenset[ServerName]:
        """The servers with a joined user (kept until a server joins or leaves)."""
        if self._servers is None:
            self._servers = frozenset(self._on_server)
        return self._servers

    def takes_part(self, server_name: ServerName) -> bool:
        """Whether ``server_name`` is in the room: one of its users is joined, or no
        server's is (a room that only ever lived on this server). A server that left can
        no longer vouch for the room's state."""
        return not self._on_server or server_name in self._on_server


class StateService:
    def __init__(
        self, store: EventStore, *, event_cache_size: int = 10_000, lane: Lane = SOLE_WRITER
    ) -> None:
        """``lane``: the state group IDs this process allocates (one residue of them per
        event writer of a deployment, as for stream positions)."""
        self._store = store
        self._lane = lane
        self._rooms: dict[RoomID, RoomSnapshot] = {}
        # How many times ``forget_rooms`` ran: a load across one is read again.
        self._rooms_forgotten = 0
        self._room_load_locks: dict[RoomID, asyncio.Lock] = {}
        self._events: LRU[EventID, StoredEvent] = LRU(event_cache_size)
        # Events held outside the timeline, each with the redaction applied to it (if any).
        self._outliers: LRU[EventID, tuple[Pdu, EventID | None]] = LRU(event_cache_size)
        # Told of the events forgotten here (in a deployment: every other process
        # forgets its copies too, ``forgotten_elsewhere``; issue 21).
        self.on_forgotten: list[Callable[[list[EventID]], None]] = []
        # Events queued for the writer and their new state groups, until their commit
        # settles (see ``hold_in_flight``).
        self._in_flight: dict[EventID, StoredEvent] = {}
        self._in_flight_groups: dict[int, NewStateGroup] = {}
        self._in_flight_commits: dict[RoomID, set[asyncio.Future[None]]] = {}
        # Bumped when a purge changes stored events: a read that began before a bump
        # does not cache what it loaded (it may be the old form).
        self._forget_epoch = 0
        self._redaction_count = 0
        self._groups: LRU[int, StateGroupRow] = LRU(100_000)
        self._deltas: LRU[int, dict[StateKey, EventID]] = LRU(_DELTA_CACHE_SIZE)
        # (group, key) -> event ID or None: groups are immutable, so lookups are too.
        self._keyed: LRU[tuple[int, StateKey], tuple[EventID | None]] = LRU(_KEYED_CACHE_SIZE)
        self._next_group = 0

    async def start(self) -> None:
        self._next_group = self._lane.first_above(await self._store.get_max_state_group())

    # -- events ----------------------------------------------------------------------

    async def get_state_events_by_id(
        self, event_ids: Iterable[EventID]
    ) -> dict[EventID, StoredEvent]:
        """State events by ID for showing room state: from the timeline, or held outside
        it (the state a room had when this server joined it over federation, which is
        not part of its timeline here: such events have stream position 0). A redacted
        one comes in its redacted form, as everyone may see it."""
        ids = set(event_ids)
        found = {
            event_id: (replace(e, pdu=redact_pdu(e.pdu)) if e.redacted_by is not None else e)
            for event_id, e in (await self.get_events(ids)).items()
        }
        missing = ids - found.keys()
        if missing:
            pdus = await self.get_pdus(missing)
            for event_id, pdu in pdus.items():
                found[event_id] = StoredEvent(pdu, 0, 0)
        return found

    async def get_events(self, event_ids: Iterable[EventID]) -> dict[EventID, StoredEvent]:
        """Timeline events by ID."""
        found: dict[EventID, StoredEvent] = {}
        missing = []
        for event_id in event_ids:
            cached = self._events.get(event_id) or self._in_flight.get(event_id)
            if cached is not None:
                found[event_id] = cached
            else:
                missing.append(event_id)
        if missing:
            epoch = self._forget_epoch
            loaded = await self._store.get_events(missing)
            if epoch == self._forget_epoch:
                for event_id, event in loaded.items():
                    self._events.put(event_id, event)
            found.update(loaded)
        return found

    async def get_pdus(
        self, event_ids: Iterable[EventID], *, as_served: bool = False
    ) -> dict[EventID, Pdu]:
        """Events by ID from the timeline or from those held outside it (outliers,
        rejected and soft-failed events received over federation). ``as_served``: a
        event redacted here (in the timeline or outside it) in its redacted form, as it may
        be shown to other servers and clients (the stored original is for holds and
        exports)."""
        ids = set(event_ids)
        found = {
            e: redact_pdu(stored.pdu) if as_served and stored.redacted_by else stored.pdu
            for e, stored in (await self.get_events(ids)).items()
        }
        held: dict[EventID, tuple[Pdu, EventID | None]] = {}
        missing = []
        for event_id in ids - found.keys():
            cached = self._outliers.get(event_id)
            if cached is not None:
                held[event_id] = cached
            else:
                missing.append(event_id)
        if missing:
            epoch = self._forget_epoch
            for event_id, row in (await self._store.get_outliers(missing)).items():
                held[event_id] = (row.pdu, row.redacted_by)
                if epoch == self._forget_epoch:
                    self._outliers.put(event_id, held[event_id])
        for event_id, (pdu, redacted_by) in held.items():
            found[event_id] = redact_pdu(pdu) if as_served and redacted_by else pdu
        return found

    async def pending_redactions(self, event_ids: Iterable[EventID]) -> set[EventID]:
        """The redactions among ``event_ids`` not in effect yet, which clients are not
        shown (rooms v3+ "Handling redactions"; ``storage.redactions``)."""
        return await self._store.pending_redactions_among(event_ids)

    async def get_event(self, event_id: EventID) -> StoredEvent | None:
        return (await self.get_events([event_id])).get(event_id)

    async def get_dag_events(self, event_ids: Iterable[EventID]) -> dict[EventID, StoredEvent]:
        """Timeline events by ID and those purged from it (retention, disappearing
        messages), which stay in the room's DAG for other servers: a purged event as its
        redacted PDU with the state group after it (no stream position)."""
        ids = set(event_ids)
        found = await self.get_events(ids)
        if len(found) < len(ids):
            for event_id, row in (await self._store.get_outliers(ids - found.keys())).items():
                if row.status == "purged" and row.state_group is not None:
                    found[event_id] = StoredEvent(row.pdu, 0, row.state_group)
        return found

    @property
    def forget_epoch(self) -> int:
        """Changes whenever a purge changes stored events (see ``cache_events``)."""
        return self._forget_epoch

    def cache_events(self, events: Iterable[StoredEvent], epoch: int | None = None) -> None:
        """Keep the state events among ``events`` (new or read in a range); ``epoch``:
        the ``forget_epoch`` before they were read (nothing is kept if a purge happened
        since: they may be the old form).

        State events are what is read again by ID (auth checks, room state); messages
        mostly are not, and reads by ID cache whatever they load. This keeps the cache,
        the largest user of memory, proportional to state rather than to traffic.
        """
        if epoch is not None and epoch != self._forget_epoch:
            return
        for event in events:
            if event.pdu.is_state():
                self._events.put(event.pdu.event_id, event)

    def hold_in_flight(
        self,
        events: Sequence[StoredEvent],
        groups: Sequence[NewStateGroup],
        commit: asyncio.Future[None],
    ) -> None:
        """Keep ``events`` and their new state ``groups``, queued for the writer,
        readable until their ``commit`` settles (stored, or failed and forgotten with
        their room). The room's snapshot moves past an event before its commit (the lock
        is not held meanwhile), so it is a forward extremity whose state the next event's
        state resolution reads, whether or not the caches (which keep only state events,
        and evict) still hold it."""
        for event in events:
            self._in_flight[event.pdu.event_id] = event
        for group in groups:
            self._in_flight_groups[group.row.state_group] = group
        room_ids = {event.pdu.room_id for event in events}
        for room_id in room_ids:
            self._in_flight_commits.setdefault(room_id, set()).add(commit)

        def settled(_: asyncio.Future[None]) -> None:
            for event in events:
                self._in_flight.pop(event.pdu.event_id, None)
            for group in groups:
                self._in_flight_groups.pop(group.row.state_group, None)
            for room_id in room_ids:
                pending = self._in_flight_commits.get(room_id)
                if pending is not None:
                    pending.discard(commit)
                    if not pending:
                        del self._in_flight_commits[room_id]

        commit.add_done_callback(settled)

    async def commits_settled(self, room_id: RoomID) -> None:
        """Wait until the commits of the room's events queued so far have settled: a
        rewrite of the room's stored state (a partial state completed) holds the room's
        lock, so no new event is queued meanwhile, and must not race events built
        before it."""
        pending = self._in_flight_commits.get(room_id)
        if pending:
            await asyncio.wait(list(pending))

    async def committed_room(self, room_id: RoomID) -> RoomSnapshot | None:
        """``get_room`` once no event the snapshot holds waits for its commit: what a
        client reads of a room's current state (``GET /state``, members) is then stored,
        so it agrees with what is read from storage (``joined_rooms``, /sync) and never
        shows an event whose commit fails. Read the snapshot before awaiting anything
        else. A room written without a pause is read at its head after a few waits, so a
        reader is never held for long."""
        for _ in range(_COMMITTED_READ_WAITS):
            pending = self._in_flight_commits.get(room_id)
            if not pending:
                break
            await asyncio.wait(list(pending))
        return await self.get_room(room_id)

    async def is_redacted(self, event_id: EventID) -> bool:
        """Whether the timeline event ``event_id`` has been redacted (its stored content
        is then not what clients see, nor what policies may be read from)."""
        stored = await self.get_event(event_id)
        return stored is not None and stored.redacted_by is not None

    def forget_events(self, event_ids: Iterable[EventID], *, stored: bool = True) -> None:
        """Drop cached copies of events whose stored form changed (purged, or their
        content deleted): the cache otherwise holds events as immutable. Events that were
        never ``stored`` (a failed commit's) are this process's alone: nobody is told."""
        forgotten = list(event_ids)
        self._forget(forgotten)
        if stored:
            for listener in self.on_forgotten:
                listener(forgotten)

    def forgotten_elsewhere(self, event_ids: Sequence[Any] | None) -> None:
        """Another process of the deployment changed these stored events (None: it did
        not say which): drop this process's copies, as ``forget_events`` (not told on)."""
        if event_ids is None:
            self._forget_epoch += 1
            self._events.clear()
            self._outliers.clear()
            return
        self._forget([EventID(str(event_id)) for event_id in event_ids])

    def _forget(self, event_ids: list[EventID]) -> None:
        self._forget_epoch += 1
        for event_id in event_ids:
            self._events.pop(event_id)
            self._outliers.pop(event_id)
            self._in_flight.pop(event_id, None)

    @property
    def redaction_count(self) -> int:
        """Changes with every redaction stored (for caches of what state shows)."""
        return self._redaction_count

    def cached_event(self, event_id: EventID) -> StoredEvent | None:
        """The cached copy of a timeline event, without reading storage (None: none)."""
        return self._events.get(event_id)

    def mark_redacted(self, event_id: EventID, redaction_id: EventID) -> None:
        self._redaction_count += 1
        self._outliers.pop(event_id)  # read again as the commit left it
        cached = self._events.get(event_id)
        if cached is not None and cached.redacted_by is None:
            self._events.put(
                event_id,
                replace(cached, redacted_by=redaction_id),
            )

    # -- current state -----------------------------------------------------------------

    async def get_room(self, room_id: RoomID) -> RoomSnapshot | None:
        """The room's snapshot, loaded on first use; None if this server has no such room."""
        snapshot = self._rooms.get(room_id)
        if snapshot is not None:
            return snapshot
        lock = self._room_load_locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            snapshot = self._rooms.get(room_id)
            while snapshot is None:
                epoch = self._rooms_forgotten
                snapshot = await self._load_room(room_id)
                if snapshot is None:
                    break
                if epoch != self._rooms_forgotten:
                    # Rooms were forgotten while it loaded (``forget_rooms``): what
                    # was read may be older than what made them forgotten.
                    snapshot = None
                    continue
                self._rooms[room_id] = snapshot
        self._room_load_locks.pop(room_id, None)
        return snapshot

    async def _load_room(self, room_id: RoomID) -> RoomSnapshot | None:
        room = await self._store.get_room(room_id)
        group = await self._store.get_current_state_group(room_id)
        if room is None or group is None:
            return None
        extremities = await self._store.get_forward_extremities(room_id)
        return RoomSnapshot(
            room_id=room_id,
            room_version=KNOWN_ROOM_VERSIONS[room.room_version],
            state=await self._store.get_current_state_ids(room_id),
            memberships=await self._store.get_current_memberships(room_id),
            extremities=extremities,
            depth=await self._store.get_max_depth(extremities),
            state_group=group,
        )

    def add_room(self, snapshot: RoomSnapshot) -> None:
        self._rooms[snapshot.room_id] = snapshot

    def cached_room(self, room_id: RoomID) -> RoomSnapshot | None:
        """The snapshot if it is loaded (no I/O)."""
        return self._rooms.get(room_id)

    def is_forgotten(self, snapshot: RoomSnapshot) -> bool:
        """True if ``snapshot`` is no longer the room's cached one (see ``forget_room``)."""
        return self._rooms.get(snapshot.room_id) is not snapshot

    def forget_room(self, room_id: RoomID) -> None:
        """Drop the cached snapshot (after a failed write); the next use reloads it."""
        self._rooms.pop(room_id, None)

    def forget_rooms(self, where: Callable[[RoomID], bool]) -> None:
        """``forget_room`` for every cached room ``where`` is true of, and for the ones
        loading now."""
        self._rooms_forgotten += 1
        for room_id in [r for r in self._rooms if where(r)]:
            del self._rooms[room_id]

    async def get_state_events(
        self,
        state: Mapping[StateKey, EventID],
        keys: Iterable[StateKey] | None = None,
        *,
        as_served: bool = False,
    ) -> dict[StateKey, Pdu]:
        wanted = state if keys is None else {k: state[k] for k in keys if k in state}
        events = await self.get_pdus(wanted.values(), as_served=as_served)
        return {k: events[e] for k, e in wanted.items() if e in events}

    # -- historical state -------------------------------------------------------------

    def allocate_group_id(self) -> int:
        group = self._next_group
        self._next_group += self._lane.count
        return group

    async def _group_rows(self, groups: Iterable[int]) -> dict[int, StateGroupRow]:
        found: dict[int, StateGroupRow] = {}
        missing = []
        for group in groups:
            row = self._groups.get(group)
            if row is None and (held := self._in_flight_groups.get(group)) is not None:
                row = held.row
            if row is None:
                missing.append(group)
            else:
                found[group] = row
        if missing:
            loaded = await self._store.get_state_group_rows(missing)
            for group, row in loaded.items():
                self._groups.put(group, row)
            found.update(loaded)
        return found

    async def state_group_row(self, group: int) -> StateGroupRow:
        return (await self._group_rows([group]))[group]

    async def _chain(self, group: int, stop_seq: int = 0) -> list[StateGroupRow]:
        """``group`` and its bases, nearest first, down to (excluding) position ``stop_seq``."""
        chain = []
        current: int | None = group
        while current is not None:
            row = (await self._group_rows([current]))[current]
            if row.seq <= stop_seq:
                break
            chain.append(row)
            current = row.base_group
        return chain

    async def _deltas_for(
        self, groups: Sequence[int], keys: Sequence[StateKey] | None
    ) -> dict[int, dict[StateKey, EventID]]:
        """The deltas of ``groups`` (only ``keys`` if given): cached or being written
        first, then from storage (whole deltas are cached)."""
        found: dict[int, dict[StateKey, EventID]] = {}
        for group in groups:
            delta = self._deltas.get(group)
            if delta is None and (held := self._in_flight_groups.get(group)) is not None:
                delta = held.delta
            if delta is not None:
                found[group] = delta if keys is None else {k: delta[k] for k in keys if k in delta}
        missing = [g for g in groups if g not in found]
        if missing and keys is not None:
            found.update(await self._store.get_state_group_deltas(missing, keys))
        elif missing:
            loaded = await self._store.get_state_group_deltas(missing)
            for group, delta in loaded.items():
                self._deltas.put(group, delta)
            found.update(loaded)
        return found

    async def state_group_deltas(self, groups: Sequence[int]) -> dict[int, dict[StateKey, EventID]]:
        """The deltas of ``groups``: the keys each changed since its base group (so since
        its parent too), with their events in it. Read-only: the dicts may be cached."""
        return await self._deltas_for(groups, None)

    async def state_ids_at_group(
        self, group: int, keys: Sequence[StateKey] | None = None
    ) -> dict[StateKey, EventID]:
        """The room state of ``group`` (only ``keys`` if given). The current group of a
        loaded room (that of every new event: each sync woken by a message asks for it)
        is copied from its snapshot instead of overlaying the group's deltas."""
        if keys is not None:
            return await self._keyed_state_ids(group, keys)
        snapshot = self._rooms.get((await self.state_group_row(group)).room_id)
        if snapshot is not None and snapshot.state_group.state_group == group:
            return dict(snapshot.state)
        chain = await self._chain(group)
        deltas = await self._deltas_for([row.state_group for row in chain], None)
        state: dict[StateKey, EventID] = {}
        for row in reversed(chain):
            state.update(deltas[row.state_group])
        return state

    async def state_ids_in_room(
        self, room_id: RoomID, group: int, keys: Sequence[StateKey]
    ) -> dict[StateKey, EventID]:
        """``state_ids_at_group`` for a group of ``room_id``, answered from the room's
        snapshot without I/O when ``group`` is its current group (new events are)."""
        snapshot = self._rooms.get(room_id)
        if snapshot is not None and snapshot.state_group.state_group == group:
            return {k: snapshot.state[k] for k in keys if k in snapshot.state}
        return await self._keyed_state_ids(group, keys)

    async def _keyed_state_ids(
        self, group: int, keys: Sequence[StateKey]
    ) -> dict[StateKey, EventID]:
        state: dict[StateKey, EventID] = {}
        missing = []
        for key in keys:
            cached = self._keyed.get((group, key))
            if cached is None:
                missing.append(key)
            elif cached[0] is not None:
                state[key] = cached[0]
        if missing:
            chain = await self._chain(group)
            deltas = await self._deltas_for([row.state_group for row in chain], missing)
            found: dict[StateKey, EventID] = {}
            for row in reversed(chain):
                found.update(deltas[row.state_group])
            for key in missing:
                self._keyed.put((group, key), (found.get(key),))
            state.update(found)
        return state

    async def new_state_group(
        self, snapshot: RoomSnapshot, changes: Mapping[StateKey, EventID]
    ) -> NewStateGroup:
        """The group after ``changes`` on top of the snapshot's, with its Fenwick delta."""
        return await self.child_state_group(snapshot.state_group, changes)

    async def group_holding(
        self,
        state: Mapping[StateKey, EventID],
        candidates: Sequence[tuple[StateGroupRow, Mapping[StateKey, EventID]]],
    ) -> NewStateGroup:
        """A new group holding exactly ``state``, derived from one of ``candidates``
        (groups of its room with their states): the child, with the difference, of the
        candidate that differs least from it among those whose keys ``state`` all has.
        Without one (a state resolution left a key with no event: a state reset), a new
        root holding the whole of it, as deltas only add or replace keys (Synapse tries
        each input group alike)."""
        best: tuple[StateGroupRow, dict[StateKey, EventID]] | None = None
        for parent, parent_state in candidates:
            if not parent_state.keys() <= state.keys():
                continue
            changes = {k: e for k, e in state.items() if parent_state.get(k) != e}
            if best is None or len(changes) < len(best[1]):
                best = (parent, changes)
        if best is not None:
            return await self.child_state_group(*best)
        return self.root_state_group(candidates[0][0].room_id, state)

    async def child_state_group(
        self, parent: StateGroupRow, changes: Mapping[StateKey, EventID]
    ) -> NewStateGroup:
        """The group of ``parent``'s state with ``changes`` applied, at the next chain
        position after ``parent``. Groups form a tree: two children of one parent (state
        that forked, as federation allows) each keep the O(log n) bound on their own path
        to the root."""
        seq = parent.seq + 1
        base_seq = seq - _lowbit(seq)
        path = await self._chain(parent.state_group, stop_seq=base_seq)
        deltas = await self._deltas_for([row.state_group for row in path], None)
        delta: dict[StateKey, EventID] = {}
        for row in reversed(path):
            delta.update(deltas[row.state_group])
        delta.update(changes)
        base_group = path[-1].base_group if path else parent.state_group
        row = StateGroupRow(
            self.allocate_group_id(), parent.room_id, seq, parent.state_group, base_group
        )
        self._groups.put(row.state_group, row)
        self._deltas.put(row.state_group, dict(delta))
        return NewStateGroup(row, delta)

    def forget_state_deltas(self) -> None:
        """Drop the cached deltas and keyed lookups of every state group: a room whose
        partial state was completed had rows added to its groups (the groups are
        otherwise immutable)."""
        self._deltas = LRU(_DELTA_CACHE_SIZE)
        self._keyed = LRU(_KEYED_CACHE_SIZE)

    def root_state_group(self, room_id: RoomID, state: Mapping[StateKey, EventID]) -> NewStateGroup:
        """A group holding the whole of ``state``, derived from no other (no parent, no
        base): a new room's first state, the state a join over federation starts from,
        a state that lost keys (``group_holding``)."""
        row = StateGroupRow(self.allocate_group_id(), room_id, _ROOT_SEQ, None, None)
        self._groups.put(row.state_group, row)
        self._deltas.put(row.state_group, dict(state))
        return NewStateGroup(row, dict(state))
