"""What an application-service transaction carries beside room events.

Application Service API, "Pushing ephemeral data": an appservice registered with
``receive_ephemeral`` (MSC2409) gets ``ephemeral`` events (sent under the unstable name
``de.sorunome.msc2409.ephemeral`` too): ``m.typing`` and ``m.receipt`` of the rooms it
is interested in, with their ``room_id`` (``m.read.private`` receipts only of its own
users), and ``m.presence`` of its users and of the users in the rooms it is interested
in. It also gets the to-device messages of its users' devices
(``de.sorunome.msc2409.to_device``, each with ``to_user_id`` and ``to_device_id``), read
from its own position in the stored inbox, so nothing is lost across a restart. Its 200
deletes none a device syncs for itself (as in Synapse); see ``acknowledged``.

An appservice registered with ``org.matrix.msc3202`` gets what a bridge needs to encrypt
as its users: ``org.matrix.msc3202.device_lists`` (``changed``: its users and the users
of the rooms it is interested in whose devices changed; ``left`` stays empty, as in
Synapse) and, for its users whose keys changed and the recipients of the to-device
messages sent, ``org.matrix.msc3202.device_one_time_keys_count`` (also under Synapse's
``device_one_time_key_counts``) and ``org.matrix.msc3202.device_unused_fallback_key_types``.

The transaction sender asks ``collect`` for a batch after the position it last sent,
stores the batch's opaque ``position`` with its transaction and calls ``acknowledged``
once the appservice answered 200. ``wake`` callables are told an appservice's ID when it
may have something new: a receipt, presence, typing or device list change only of a room
or user its last collect did not find of no interest (answered from memory). Each
collect reads a bounded number of rows per stream and continues where the last one
stopped; a batch with nothing to send is remembered, so asking again from the same
position goes on from where that one ended.

Typing and key changes are kept in memory (bounded logs fed by the services' hooks), so
after a restart only the changes since are told; the stored streams (receipts,
to-device, device lists) continue from the stored position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import astuple, dataclass, field, replace
from typing import TypeVar

import orjson

from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.presence import PresenceService
from peyvand.services.sync.receipts import READ_PRIVATE, ReceiptService, receipt_event
from peyvand.services.sync.streams import parse_position_number
from peyvand.services.sync.typing import TypingService
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.storage.appservice_extras import AppServiceExtrasStore, InboxEntry
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import DeviceID, JsonDict, RoomID, UserID

__all__ = ["AppServiceExtras", "ExtrasBatch", "InterestedInRoom"]

logger = logging.getLogger(__name__)
_K = TypeVar("_K", bound=Hashable)

EPHEMERAL = "ephemeral"
UNSTABLE_EPHEMERAL = "de.sorunome.msc2409.ephemeral"
TO_DEVICE = "de.sorunome.msc2409.to_device"
DEVICE_LISTS = "org.matrix.msc3202.device_lists"
ONE_TIME_KEYS_COUNT = "org.matrix.msc3202.device_one_time_keys_count"
# The name Synapse sends the same counts under too (an earlier draft of MSC3202).
ONE_TIME_KEY_COUNTS = "org.matrix.msc3202.device_one_time_key_counts"
UNUSED_FALLBACK_KEY_TYPES = "org.matrix.msc3202.device_unused_fallback_key_types"

# Rows of a stored stream read per collect, per wanted item (most rows are for others).
_SCAN_FACTOR = 10
_MAX_SCAN = 2_000
# Typing and key changes remembered (older ones are not told).
_LOG_SIZE = 10_000

# Whether the appservice is interested in the room (``AppServiceInterest``).
InterestedInRoom = Callable[[ApplicationService, RoomID], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class ExtrasBatch:
    """``fields`` merged into the transaction body; ``position`` continues after them;
    ``count`` items in ``fields`` (0: nothing to send)."""

    fields: JsonDict
    position: str
    count: int


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a batch ends in each stream; ``to_device_from`` is where its to-device
    range began (what ``acknowledged`` deletes is ``(to_device_from, to_device]``)."""

    typing: int
    receipts: int
    presence: int
    to_device_from: int
    to_device: int
    device_lists: int
    keys: int

    def encode(self) -> str:
        return "_".join(str(value) for value in astuple(self))

    @classmethod
    def decode(cls, text: str) -> _Position | None:
        parts = text.split("_")
        try:
            values = [parse_position_number(part) for part in parts]
            return cls(*values)
        except (TypeError, ValueError):
            return None


@dataclass(slots=True)
class _Seen:
    """The interest answers one collect found, so each room and user is asked once."""

    rooms: dict[RoomID, bool] = field(default_factory=dict)
    users: dict[UserID, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _NotWanted:
    """The rooms and users an appservice's last collect found of no interest to it."""

    appservice: ApplicationService
    rooms: frozenset[RoomID]
    users: frozenset[UserID]


class AppServiceExtras:
    def __init__(
        self,
        registry: AppServiceRegistry,
        store: AppServiceExtrasStore,
        notifier: Notifier,
        typing: TypingService,
        receipts: ReceiptService,
        presence: PresenceService,
        index: RoomIndex,
        interested_in_room: InterestedInRoom,
        *,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._registry = registry
        self._store = store
        self._notifier = notifier
        self._typing = typing
        self._receipts = receipts
        self._presence = presence
        self._index = index
        self._interested_in_room = interested_in_room
        self._wall_clock_ms = wall_clock_ms
        # (typing position, room) of each change of a room's typing set, oldest first.
        self._typing_log: deque[tuple[int, RoomID]] = deque(maxlen=_LOG_SIZE)
        # (key change position, user) of each local user whose key counts changed.
        # Positions start at the wall clock, so they keep increasing across restarts.
        self._keys_position = wall_clock_ms()
        self._keys_log: deque[tuple[int, UserID]] = deque(maxlen=_LOG_SIZE)
        # appservice ID -> (since, reached) of its last batch with nothing in it.
        self._empty: dict[str, tuple[str | None, str]] = {}
        # The registrations the last full pass over stored to-device messages was made
        # for (none yet: the first acknowledgement makes one).
        self._pruned_for: tuple[ApplicationService, ...] | None = None
        self._prune_lock = asyncio.Lock()
        # appservice ID -> what its last collect found it is not interested in: a receipt,
        # presence or device list change of those wakes it not (until it collects again).
        # Only a namespace user's join makes a room (or its members) of interest, and the
        # appservice gets that event in a transaction, whose collect forgets this first.
        self._not_wanted: dict[str, _NotWanted] = {}
        # Called with an appservice ID when it may have new extras (the sender wakes).
        self.wake: list[Callable[[str], None]] = []

    # -- hooks ----------------------------------------------------------------------------

    def on_typing(self, room_ids: Sequence[RoomID], position: int) -> None:
        """``TypingService.change_hooks``."""
        services = [s for s in self._registry.services if s.receive_ephemeral]
        if services:
            self._typing_log.extend((position, room_id) for room_id in room_ids)
            self._wake(
                s for s in services if any(r not in self._not_wanted_of(s).rooms for r in room_ids)
            )

    def on_receipt(self, row: ReceiptRow, event_stream_ordering: int) -> None:
        """``ReceiptService.stored_hooks``: the appservices that may be interested in
        the room (answered from memory)."""
        self._wake(
            s
            for s in self._registry.services
            if s.receive_ephemeral
            and (
                s.is_user_in_namespace(row.user_id)
                or row.room_id not in self._not_wanted_of(s).rooms
            )
        )

    def on_presence(self, user_ids: Sequence[UserID]) -> None:
        """``PresenceService.change_hooks``."""
        self._wake(
            s
            for s in self._registry.services
            if s.receive_ephemeral and self._may_want(s, user_ids)
        )

    def on_to_device(self, position: int, recipients: AbstractSet[UserID]) -> None:
        """``ToDeviceService.stored_hooks``: the appservices acting for a recipient."""
        self._wake(
            s
            for s in self._registry.services
            if s.receive_ephemeral and any(s.is_user_in_namespace(u) for u in recipients)
        )

    def on_device_list_changed(self, user_id: UserID) -> None:
        """``DeviceListService.change_hooks``."""
        self._wake(s for s in self._registry.services if s.msc3202 and self._may_want(s, [user_id]))

    def on_keys_changed(self, devices: Sequence[tuple[UserID, DeviceID]]) -> None:
        """``E2eKeysService.counts_hooks``: one-time or fallback keys claimed, uploaded
        or deleted. Only users of an appservice that asked for key counts are kept."""
        users = {user_id for user_id, _ in devices}
        services = [
            s
            for s in self._registry.services
            if s.msc3202 and any(s.is_user_in_namespace(u) for u in users)
        ]
        if not services:
            return
        wanted = sorted(u for u in users if any(s.is_user_in_namespace(u) for s in services))
        self._keys_position = max(self._keys_position + 1, self._wall_clock_ms())
        self._keys_log.extend((self._keys_position, user_id) for user_id in wanted)
        self._wake(services)

    def _not_wanted_of(self, appservice: ApplicationService) -> _NotWanted:
        found = self._not_wanted.get(appservice.id)
        # Compared by value: a reload parses every registration again.
        if found is None or found.appservice != appservice:
            return _NotWanted(appservice, frozenset(), frozenset())
        return found

    def _may_want(self, appservice: ApplicationService, user_ids: Sequence[UserID]) -> bool:
        """Whether one of ``user_ids`` was not found of no interest to it."""
        users = self._not_wanted_of(appservice).users
        return any(u not in users for u in user_ids)

    def _wake(self, services: Iterable[ApplicationService]) -> None:
        for appservice in services:
            for wake in self.wake:
                wake(appservice.id)

    # -- the sender's interface ---------------------------------------------------------

    async def collect(
        self, appservice: ApplicationService, since: str | None, limit: int
    ) -> ExtrasBatch:
        """At most ``limit`` items of each kind after ``since`` (``None``: first start,
        from now)."""
        try:
            return await self._collect(appservice, since, limit)
        except Exception:
            # The sender backs off and builds again: the extras stay due then.
            self._wake([appservice])
            raise

    async def _collect(
        self, appservice: ApplicationService, since: str | None, limit: int
    ) -> ExtrasBatch:
        self._not_wanted.pop(appservice.id, None)
        now = self._now()
        start = self._start(appservice, since, now)
        limit = max(limit, 1)
        seen = _Seen()
        fields: JsonDict = {}
        count = 0
        reached = now
        if appservice.receive_ephemeral:
            ephemeral, typing_at = await self._typing_events(appservice, start.typing, limit, seen)
            receipts, receipts_at = await self._receipt_events(
                appservice, start.receipts, now.receipts, limit - len(ephemeral), seen
            )
            ephemeral += receipts
            presence, presence_at = await self._presence_events(
                appservice, start.presence, limit - len(ephemeral), seen
            )
            ephemeral += presence
            to_device, to_device_at = await self._to_device(
                appservice, start.to_device, now.to_device, limit
            )
            reached = replace(
                reached,
                typing=typing_at,
                receipts=receipts_at,
                presence=presence_at,
                to_device_from=start.to_device,
                to_device=to_device_at,
            )
            if ephemeral:
                fields[EPHEMERAL] = fields[UNSTABLE_EPHEMERAL] = ephemeral
            if to_device:
                fields[TO_DEVICE] = to_device
            count += len(ephemeral) + len(to_device)
        else:
            to_device = []
        if appservice.msc3202:
            changed, device_lists_at = await self._device_list_changes(
                appservice, start.device_lists, now.device_lists, limit, seen
            )
            key_users, keys_at = await self._key_changes(appservice, start.keys, limit)
            reached = replace(reached, device_lists=device_lists_at, keys=keys_at)
            if changed:
                fields[DEVICE_LISTS] = {"changed": changed, "left": []}
            count += len(changed) + len(key_users)
            recipients = {message["to_user_id"] for message in to_device}
            await self._add_key_states(fields, sorted(set(key_users) | recipients))
        if _stopped_early(reached, now):
            # Left for the next batch: the sender comes back for it.
            self._wake([appservice])
        if not appservice.aliases:
            # An alias added to a room tells no one: then every receipt wakes.
            self._not_wanted[appservice.id] = _NotWanted(
                appservice,
                frozenset(r for r, wanted in seen.rooms.items() if not wanted),
                frozenset(u for u, wanted in seen.users.items() if not wanted),
            )
        position = reached.encode()
        if count == 0:
            self._empty[appservice.id] = (since, position)
        else:
            self._empty.pop(appservice.id, None)
        return ExtrasBatch(fields, position, count)

    async def acknowledged(self, appservice: ApplicationService, position: str) -> None:
        """The appservice's acknowledgement of the batch up to ``position`` is stored.

        Acknowledging deletes nothing by itself, as in Synapse: each appservice has its
        own to-device position, and a device that syncs deletes its own messages. The
        messages of devices no one syncs as (no access token: the devices a bridge
        manages, MSC4190, or made for MSC3202 encryption) would stay forever, so they are
        deleted once every appservice that may act as their user (``?user_id=``) gets
        to-device messages and has acknowledged them; only users in an appservice's
        exclusive namespace, whom no one else can log in as. The range this batch
        covered is looked at, and everything up to the acknowledged positions on the
        first acknowledgement after a start or a change of registrations (what a crash
        or a registration removed left behind, and after a pass that failed)."""
        reached = _Position.decode(position)
        if reached is None or not appservice.receive_ephemeral:
            return
        async with self._prune_lock:
            services = tuple(self._registry.services)
            try:
                if services != self._pruned_for:
                    await self._prune(services, 0, None)
                    self._pruned_for = services
                elif reached.to_device > reached.to_device_from:
                    await self._prune(services, reached.to_device_from, reached.to_device)
            except BaseException:
                # What this left is swept by the next acknowledgement's full pass.
                self._pruned_for = None
                raise

    async def _prune(
        self, services: Sequence[ApplicationService], after: int, until: int | None
    ) -> None:
        """Delete what every reader of an unattended device's user has acknowledged, of
        the messages at positions in ``(after, until]`` (``None``: the newest
        acknowledged)."""
        readers = [s for s in services if s.receive_ephemeral]
        stored = await self._store.acknowledged_extras_positions([s.id for s in readers])
        acked: dict[str, int] = {}
        for appservice_id, text in stored.items():
            decoded = _Position.decode(text)
            if decoded is not None:
                acked[appservice_id] = decoded.to_device
        if not acked:
            return
        top = max(acked.values()) if until is None else until
        by_bound: dict[int, list[UserID]] = {}
        for user_id in await self._store.inbox_recipients_between(after, top):
            acting = [s for s in services if s.is_user_in_namespace(user_id)]
            if not any(s.is_exclusive_user(user_id) for s in acting):
                continue
            if not all(s.receive_ephemeral for s in acting):
                continue
            bound = min(min(acked.get(s.id, 0) for s in acting), top)
            if bound > after:
                by_bound.setdefault(bound, []).append(user_id)
        for bound, user_ids in by_bound.items():
            await self._store.delete_unattended_inbox(user_ids, after, bound)

    # -- positions ------------------------------------------------------------------------

    def _now(self) -> _Position:
        """The streams' current positions. Receipts, typing and presence are read from
        their services, whose hooks run before the notifier hears of a change; to-device
        and device lists from the notifier, told before their hooks run."""
        token = self._notifier.current_token
        return _Position(
            typing=self._typing.current_position,
            receipts=self._receipts.current_position,
            presence=self._presence.current_position,
            to_device_from=token.to_device,
            to_device=token.to_device,
            device_lists=token.device_lists,
            keys=self._keys_position,
        )

    def _start(
        self, appservice: ApplicationService, since: str | None, now: _Position
    ) -> _Position:
        """Where this batch begins: after ``since``, or after the empty batch last
        collected from it; now for a first start (or an unreadable position)."""
        empty = self._empty.get(appservice.id)
        if empty is not None and empty[0] == since:
            since = empty[1]
        start = None if since is None else _Position.decode(since)
        if start is None:
            if since is not None:
                logger.warning("appservice %s: unreadable extras position", appservice.id)
            return now
        return start

    # -- ephemeral ----------------------------------------------------------------------

    async def _room_wanted(
        self, appservice: ApplicationService, room_id: RoomID, seen: _Seen
    ) -> bool:
        """Whether the appservice is interested in the room (asked once per collect)."""
        wanted = seen.rooms.get(room_id)
        if wanted is None:
            wanted = seen.rooms[room_id] = await self._interested_in_room(appservice, room_id)
        return wanted

    async def _user_wanted(
        self, appservice: ApplicationService, user_id: UserID, seen: _Seen
    ) -> bool:
        """Its own users, and those joined to a room it is interested in."""
        if appservice.is_user_in_namespace(user_id):
            return True
        wanted = seen.users.get(user_id)
        if wanted is None:
            memberships = list((await self._index.memberships(user_id)).items())
            wanted = False
            for room_id, (membership, _) in memberships:
                if membership == "join" and await self._room_wanted(appservice, room_id, seen):
                    wanted = True
                    break
            seen.users[user_id] = wanted
        return wanted

    async def _typing_events(
        self, appservice: ApplicationService, after: int, limit: int, seen: _Seen
    ) -> tuple[list[JsonDict], int]:
        """The current ``m.typing`` of each room of interest whose typing set changed
        after ``after`` (at most ``limit`` rooms), and the typing position reached."""

        async def room_wanted(room_id: RoomID) -> bool:
            return await self._room_wanted(appservice, room_id, seen)

        wanted, reached = await _first_wanted(
            _logged_after(self._typing_log, after),
            room_wanted,
            limit,
            max(after, self._typing.current_position),
        )
        current = self._typing.typing_for_rooms(wanted, 0)
        return [{**current[r], "room_id": r} for r in wanted if r in current], reached

    async def _receipt_events(
        self,
        appservice: ApplicationService,
        after: int,
        until: int,
        limit: int,
        seen: _Seen,
    ) -> tuple[list[JsonDict], int]:
        """One ``m.receipt`` per room of interest (at most ``limit`` rooms) with its
        receipts moved in ``(after, until]``; private ones only of the appservice's
        users (Application Service API, "Pushing ephemeral data")."""
        if limit <= 0 or after >= until:
            return [], after
        scan = _scan(limit)
        found = await self._store.receipts_between(after, until, scan)
        reached = until if len(found) < scan else found[-1][0]
        by_room: dict[RoomID, list[ReceiptRow]] = {}
        for position, row in found:
            if row.receipt_type == READ_PRIVATE and not appservice.is_user_in_namespace(
                row.user_id
            ):
                continue
            if not await self._room_wanted(appservice, row.room_id, seen):
                continue
            if row.room_id not in by_room and len(by_room) == limit:
                reached = position - 1
                break
            by_room.setdefault(row.room_id, []).append(row)
        return [{**receipt_event(rs), "room_id": r} for r, rs in by_room.items()], reached

    async def _presence_events(
        self, appservice: ApplicationService, after: int, limit: int, seen: _Seen
    ) -> tuple[list[JsonDict], int]:
        """The ``m.presence`` of users it may see whose presence changed after
        ``after`` (at most ``limit``), and the presence position reached."""
        reached = max(after, self._presence.current_position)
        if limit <= 0:
            return [], after
        changed = self._presence.changed_since(after)
        scan = _scan(limit)
        wanted: list[UserID] = []
        for index, (user_id, position) in enumerate(changed):
            if index == scan:
                reached = position - 1
                break
            if not await self._user_wanted(appservice, user_id, seen):
                continue
            if len(wanted) == limit:
                reached = position - 1
                break
            wanted.append(user_id)
        return self._presence.events_of(wanted), reached

    # -- to-device ------------------------------------------------------------------------

    async def _to_device(
        self, appservice: ApplicationService, after: int, until: int, limit: int
    ) -> tuple[list[JsonDict], int]:
        """The messages for its users' devices at positions in ``(after, until]`` (at
        most ``limit``, but one send whole), each with ``to_user_id`` and
        ``to_device_id`` (MSC2409), and the to-device position reached."""
        if after >= until:
            return [], after
        scan = _scan(limit)
        found = await self._store.inbox_between(after, until, scan)
        reached = until
        if len(found) == scan:
            last = found[-1].stream_id
            if found[0].stream_id == last:
                # One send to more devices than a page: read it whole.
                found, reached = await self._store.inbox_at(last), last
            else:
                # The page may end inside the last send: it is read next time.
                found, reached = [e for e in found if e.stream_id != last], last - 1
        messages: list[JsonDict] = []
        for position, group in _by_position(found):
            mine = [e for e in group if appservice.is_user_in_namespace(e.user_id)]
            if mine and messages and len(messages) + len(mine) > limit:
                reached = position - 1
                break
            messages.extend(
                {"to_user_id": e.user_id, "to_device_id": e.device_id, **orjson.loads(e.message)}
                for e in mine
            )
        return messages, reached

    # -- MSC3202 --------------------------------------------------------------------------

    async def _device_list_changes(
        self,
        appservice: ApplicationService,
        after: int,
        until: int,
        limit: int,
        seen: _Seen,
    ) -> tuple[list[UserID], int]:
        """Its users and the users of its rooms whose devices changed in ``(after,
        until]`` (at most ``limit``), and the device list position reached."""
        if after >= until:
            return [], after
        scan = _scan(limit)
        found = await self._store.device_list_changes_between(after, until, scan)

        async def user_wanted(user_id: UserID) -> bool:
            return await self._user_wanted(appservice, user_id, seen)

        reached = until if len(found) < scan else found[-1][0]
        return await _first_wanted(found, user_wanted, limit, reached)

    async def _key_changes(
        self, appservice: ApplicationService, after: int, limit: int
    ) -> tuple[list[UserID], int]:
        """Its users whose one-time or fallback keys changed after ``after`` (at most
        ``limit``), and the key change position reached."""

        async def in_namespace(user_id: UserID) -> bool:
            return appservice.is_user_in_namespace(user_id)

        return await _first_wanted(
            _logged_after(self._keys_log, after),
            in_namespace,
            limit,
            max(after, self._keys_position),
        )

    async def _add_key_states(self, fields: JsonDict, user_ids: Sequence[UserID]) -> None:
        """The one-time key counts and unused fallback key types of every device of
        ``user_ids`` (two queries)."""
        if not user_ids:
            return
        counts = await self._store.one_time_key_counts(user_ids)
        fallback = await self._store.unused_fallback_key_types(user_ids)
        if counts:
            fields[ONE_TIME_KEYS_COUNT] = fields[ONE_TIME_KEY_COUNTS] = counts
        if fallback:
            fields[UNUSED_FALLBACK_KEY_TYPES] = fallback


def _stopped_early(reached: _Position, now: _Position) -> bool:
    """Whether a stream was left before its current position (to-device's start aside)."""
    return any(
        getattr(reached, name) < getattr(now, name)
        for name in ("typing", "receipts", "presence", "to_device", "device_lists", "keys")
    )


def _scan(limit: int) -> int:
    return min(limit * _SCAN_FACTOR, _MAX_SCAN)


def _by_position(entries: Sequence[InboxEntry]) -> Iterable[tuple[int, list[InboxEntry]]]:
    """The entries of each position together, in order."""
    group: list[InboxEntry] = []
    for entry in entries:
        if group and group[0].stream_id != entry.stream_id:
            yield group[0].stream_id, group
            group = []
        group.append(entry)
    if group:
        yield group[0].stream_id, group


def _logged_after(log: deque[tuple[int, _K]], after: int) -> list[tuple[int, _K]]:
    """The entries of a log kept in position order whose position is above ``after``,
    oldest first, read from its newest end."""
    entries: list[tuple[int, _K]] = []
    for entry in reversed(log):
        if entry[0] <= after:
            break
        entries.append(entry)
    entries.reverse()
    return entries


async def _first_wanted(
    entries: Iterable[tuple[int, _K]],
    wanted: Callable[[_K], Awaitable[bool]],
    limit: int,
    reached: int,
) -> tuple[list[_K], int]:
    """The distinct keys of ``entries`` (position, key; oldest first) that ``wanted``
    keeps, at most ``limit`` of them, and the position reached: ``reached`` when every
    entry was looked at, else just before the first key left for the next batch."""
    picked: list[_K] = []
    kept: set[_K] = set()
    for position, key in entries:
        if key in kept or not await wanted(key):
            continue
        if len(picked) == limit:
            return picked, position - 1
        picked.append(key)
        kept.add(key)
    return picked, reached
