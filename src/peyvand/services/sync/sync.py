"""GET /sync (Client-Server API, "Syncing").

One stream token carries a position per stream. An incremental sync with nothing newer
than its token waits on the notifier without touching the database; when woken it reads
only what changed for this user. Initial syncs are bounded by the filter's timeline limit,
not by history size, and support lazy-loading of members.

Rooms joined with partial state (MSC3706 / MSC3902) are shown, as Synapse does, only to
syncs that lazy-load members; the others get such a room once its state is complete, as
newly joined, with its full state (see ``SyncService._eager_rooms``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

from peyvand.events.pdu import StateKey
from peyvand.lru import LRU
from peyvand.services.accounts.requester import Requester
from peyvand.services.e2ee.device_lists import DeviceListChanges
from peyvand.services.rooms.reads import RoomEventsService, position_token
from peyvand.services.rooms.visibility import IgnoredBy
from peyvand.services.sync.filtering import Filter
from peyvand.services.sync.invite_state import InviteState
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.state_after import StateAfter
from peyvand.services.sync.state_section import (
    MEMBER,
    LazyMembersCache,
    MemberSummary,
    gap_state,
    member_summary,
    only_members,
    room_summary,
    timeline_state,
)
from peyvand.services.sync.streams import Stream, StreamToken
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.forgotten_rooms import ForgottenRoomStore
from peyvand.storage.models import StoredEvent
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.types import DeviceID, EventID, JsonDict, RoomID, UserID

# A room's state at the end of its timeline (v1.16 ``use_state_after``), for ``state``.
_STATE_AFTER = "state_after"
# The default of ``_Result.token``, replaced by every sync.
_NO_TOKEN = StreamToken()
# Rooms whose summary inputs and non-member state keys are kept (per state group).
_SUMMARIES = 4096
# A room named by either of these has no heroes in its summary.
_NAME_FIELDS: dict[StateKey, str] = {
    ("m.room.name", ""): "name",
    ("m.room.canonical_alias", ""): "alias",
}


class TypingSource(Protocol):
    def typing_for_rooms(
        self, room_ids: Sequence[RoomID], since: int
    ) -> dict[RoomID, JsonDict]: ...


class PresenceSource(Protocol):
    async def for_sync(self, user_id: UserID, since: int | None) -> list[JsonDict]: ...


class ReceiptSource(Protocol):
    async def receipts_for_rooms(
        self, user_id: UserID, room_ids: Sequence[RoomID], since: int, until: int
    ) -> dict[RoomID, JsonDict]: ...


class AccountDataSource(Protocol):
    async def global_account_data_since(
        self, user_id: UserID, since: int | None, until: int
    ) -> list[JsonDict]:
        """Changed in ``(since, until]``; all of it, push rules included, for None."""
        ...

    async def room_account_data_since(
        self, user_id: UserID, since: int | None, until: int
    ) -> dict[RoomID, list[JsonDict]]:
        """Changed in ``(since, until]``; all of it for None (a client holding none)."""
        ...


class ToDeviceSource(Protocol):
    async def for_sync(
        self, user_id: UserID, device_id: str, since: int | None, now: int
    ) -> tuple[list[JsonDict], int]: ...

    async def acknowledge(self, user_id: UserID, device_id: str, since: int) -> None: ...


class DeviceListSource(Protocol):
    async def changes(
        self, user_id: UserID, since: StreamToken, now: StreamToken
    ) -> DeviceListChanges: ...


class DeviceKeyCounts(Protocol):
    """The syncing device's one-time and fallback keys (End-to-End Encryption,
    "Extensions to /sync")."""

    async def one_time_key_counts(self, user_id: UserID, device_id: DeviceID) -> dict[str, int]: ...

    async def unused_fallback_key_types(
        self, user_id: UserID, device_id: DeviceID
    ) -> list[str]: ...


class PartialStateSource(Protocol):
    """Rooms joined with partial state, and when each was completed (the partial-state
    resync)."""

    def is_partial(self, room_id: RoomID) -> bool: ...

    async def completed_between(self, since: int, until: int) -> set[RoomID]: ...

    def on_state_rewritten(self, listener: Callable[[RoomID], None]) -> None: ...


# (user, rooms, per thread) -> each room with unread notifications -> its section's
# ``unread_notifications`` (and, per thread, ``unread_thread_notifications``).
UnreadCounts = Callable[[UserID, Sequence[RoomID], bool], Awaitable[dict[RoomID, JsonDict]]]


@dataclass
class _Result:
    join: dict[RoomID, JsonDict] = field(default_factory=dict)
    invite: dict[RoomID, JsonDict] = field(default_factory=dict)
    knock: dict[RoomID, JsonDict] = field(default_factory=dict)
    leave: dict[RoomID, JsonDict] = field(default_factory=dict)
    account_data: list[JsonDict] = field(default_factory=list)
    to_device: list[JsonDict] = field(default_factory=list)
    device_lists: DeviceListChanges = field(default_factory=DeviceListChanges)
    presence: list[JsonDict] = field(default_factory=list)
    # The next token: the sync's ``now``, unless to-device messages remain for later.
    # (Tokens are immutable: one shared default, as building one costs 2.4 us.)
    token: StreamToken = _NO_TOKEN

    def is_empty(self) -> bool:
        return not (
            self.join
            or self.invite
            or self.knock
            or self.leave
            or self.account_data
            or self.to_device
            or self.device_lists
            or self.presence
        )


class SyncService:
    def __init__(
        self,
        member_store: ForgottenRoomStore,
        index: RoomIndex,
        state: StateService,
        room_events: RoomEventsService,
        notifier: Notifier,
        typing: TypingSource,
        receipts: ReceiptSource,
        account_data: AccountDataSource,
        unread_counts: UnreadCounts,
        to_device: ToDeviceSource,
        device_lists: DeviceListSource,
        device_keys: DeviceKeyCounts,
        ignored_by: IgnoredBy,
        *,
        remote_invites: RemoteInviteStore | None = None,
        presence: PresenceSource | None = None,
        partial_state: PartialStateSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._presence = presence
        self._partial_state = partial_state
        self._invite_state = InviteState(state, remote_invites)
        self._member_store = member_store
        self._index = index
        self._state = state
        self._room_events = room_events
        self._notifier = notifier
        self._typing = typing
        self._receipts = receipts
        self._account_data = account_data
        self._unread_counts = unread_counts
        self._to_device = to_device
        self._device_lists = device_lists
        self._device_keys = device_keys
        self._ignored_by = ignored_by
        self._clock = clock
        self._lazy_members = LazyMembersCache()
        self._state_after = StateAfter(state, room_events)
        self._summaries: LRU[tuple[RoomID, int], tuple[MemberSummary, bool]] = LRU(_SUMMARIES)
        self._state_keys: LRU[tuple[RoomID, int], tuple[StateKey, ...]] = LRU(_SUMMARIES)
        if partial_state is not None:
            partial_state.on_state_rewritten(self._forget_room_groups)

    async def sync(
        self,
        requester: Requester,
        since: StreamToken | None,
        *,
        sync_filter: Filter,
        timeout_ms: int,
        full_state: bool,
        state_after: bool = False,
    ) -> JsonDict:
        """``state_after``: each room's state comes as ``state_after``, the state at the
        end of its timeline (``state_after.py``), instead of ``state``."""
        deadline = self._clock() + timeout_ms / 1000
        if since is not None:
            # send_to_device.md: a sync from a token confirms delivery of the to-device
            # messages of the response that handed it out.
            await self._to_device.acknowledge(
                requester.user_id, requester.device_id, since.to_device
            )
        lazy_request = self._lazy_members.start(
            requester.user_id, requester.device_id, since.events if since is not None else None
        )
        while True:
            now = self._notifier.current_token
            if since is None or full_state or now.is_after(since):
                result = await self._compute(
                    requester, since, now, sync_filter, full_state, state_after, lazy_request
                )
                if since is None or full_state or not result.is_empty():
                    return await self._response(requester, result, result.token)
            remaining = deadline - self._clock()
            if remaining <= 0:
                return await self._response(
                    requester, _Result(), now if since is None else max_token(since, now)
                )
            if self._notifier.current_token != now:
                continue
            await self._notifier.wait_for_user(requester.user_id, remaining)

    async def _response(
        self, requester: Requester, result: _Result, token: StreamToken
    ) -> JsonDict:
        """The /sync body. Every response carries the device's key counts, so the client
        knows when to upload more (End-to-End Encryption, "Extensions to /sync")."""
        user_id, device_id = requester.user_id, requester.device_id
        return {
            "next_batch": token.serialize(),
            "rooms": {
                "join": result.join,
                "invite": result.invite,
                "leave": result.leave,
                "knock": result.knock,
            },
            "account_data": {"events": result.account_data},
            "presence": {"events": result.presence},
            "to_device": {"events": result.to_device},
            "device_lists": result.device_lists.to_json(),
            "device_one_time_keys_count": await self._device_keys.one_time_key_counts(
                user_id, device_id
            ),
            "device_unused_fallback_key_types": (
                await self._device_keys.unused_fallback_key_types(user_id, device_id)
            ),
        }

    async def _compute(
        self,
        requester: Requester,
        since: StreamToken | None,
        now: StreamToken,
        sync_filter: Filter,
        full_state: bool,
        state_after: bool,
        lazy_request: int,
    ) -> _Result:
        """``lazy_request``: the request's number for the lazy-loaded members cache."""
        user_id = requester.user_id
        result = _Result()
        since_events = since.events if since is not None else 0
        if self._presence is not None and (since is None or now.presence > since.presence):
            result.presence = sync_filter.presence.filter(
                await self._presence.for_sync(user_id, since.presence if since else None)
            )
        # A copy as of the token: the index is updated by commits while this sync awaits,
        # and may hold a membership stored past the token (a room joined long ago whose
        # member event changed since must still be served).
        memberships = await self._index.memberships_at(user_id, now.events)
        room_ids = sync_filter.filter_rooms(memberships)
        joined = [RoomID(r) for r in room_ids if memberships[RoomID(r)][0] == "join"]
        completed: set[RoomID] = set()
        if not sync_filter.lazy_load_members:
            joined, completed = await self._eager_rooms(joined, since, now)
        if since is not None and not full_state and since.events < now.events:
            changed = await self._index.rooms_changed_since(joined, since.events)
        elif since is not None and not full_state:
            changed = set()
        else:
            changed = set(joined)
        typing = self._typing.typing_for_rooms(joined, since.typing if since else 0)
        receipts = (
            await self._receipts.receipts_for_rooms(
                user_id, joined, since.receipts if since else 0, now.receipts
            )
            if since is None or now.receipts > since.receipts or full_state
            else {}
        )
        # Rooms joined since the token (not just a new member event, such as a profile
        # change, of a user joined already) start as in an initial sync, with their
        # current typing and receipts too (Synapse does the same).
        joined_since = [
            r
            for r in joined
            if r in completed
            or (
                since is not None
                and memberships[r][1] > since_events
                and not await self._was_joined(r, user_id, since_events)
            )
        ]
        if joined_since:
            typing.update(self._typing.typing_for_rooms(joined_since, 0))
            receipts.update(
                await self._receipts.receipts_for_rooms(user_id, joined_since, 0, now.receipts)
            )
        room_data: dict[RoomID, list[JsonDict]] = {}
        if since is None or now.account_data > since.account_data or full_state:
            since_ad = None if since is None or full_state else since.account_data
            # The filter's account_data and room.account_data ("Filtering").
            result.account_data = sync_filter.account_data.filter(
                await self._account_data.global_account_data_since(
                    user_id, since_ad, now.account_data
                )
            )
            room_filter = sync_filter.room.account_data
            room_data = {
                room_id: kept
                for room_id, events in (
                    await self._account_data.room_account_data_since(
                        user_id, None if since is None else since_ad or 0, now.account_data
                    )
                ).items()
                if room_filter.filter_rooms([room_id]) and (kept := room_filter.filter(events))
            }
        touched = [
            r
            for r in joined
            if r in changed
            or r in typing
            or r in receipts
            or r in room_data
            or r in completed
            or memberships[r][1] > since_events
        ]
        per_thread = sync_filter.unread_thread_notifications
        counts = await self._unread_counts(user_id, touched, per_thread) if touched else {}
        for room_id in touched:
            newly_joined = since is None or room_id in joined_since
            section = await self._joined_room(
                requester,
                room_id,
                since_events,
                now.events,
                sync_filter,
                initial=newly_joined,
                full_state=full_state,
                has_events=room_id in changed,
                incremental=since is not None,
                state_after=state_after,
                lazy_request=lazy_request,
            )
            ephemeral = [e for e in (typing.get(room_id), receipts.get(room_id)) if e]
            if not (
                newly_joined
                or full_state
                or ephemeral
                or room_id in room_data
                or section["timeline"]["events"]
                or section[_STATE_AFTER if state_after else "state"]["events"]
            ):
                continue  # its new events are past this sync's token, or not visible
            section["ephemeral"] = {"events": ephemeral}
            section["account_data"] = {"events": room_data.get(room_id, [])}
            section.update(
                counts.get(room_id)
                or {"unread_notifications": {"notification_count": 0, "highlight_count": 0}}
            )
            result.join[room_id] = section
        ignored: frozenset[UserID] | None = None
        for r in room_ids:
            room_id = RoomID(r)
            membership, stream = memberships[room_id]
            moved = since is None or stream > since_events or full_state
            if membership == "invite" and moved:
                invite, inviter = await self._invited_room(room_id, user_id)
                if ignored is None:
                    ignored = await self._ignored_by(user_id)
                # "Ignoring Users": invites from ignored users are not sent.
                if inviter not in ignored:
                    result.invite[room_id] = invite
            elif membership == "knock" and moved:
                stripped = (await self._invited_room(room_id, user_id))[0]["invite_state"]
                result.knock[room_id] = {"knock_state": stripped}
        left = [
            RoomID(r)
            for r in room_ids
            if memberships[RoomID(r)][0] in ("leave", "ban")
            and (
                (since is not None and memberships[RoomID(r)][1] > since_events)
                or (since is None and sync_filter.include_leave)
            )
        ]
        if left:
            forgotten = await self._member_store.get_forgotten(user_id)
            for room_id in left:
                if room_id not in forgotten:
                    result.leave[room_id] = await self._left_room(
                        requester,
                        room_id,
                        since_events,
                        memberships[room_id][1],
                        sync_filter,
                        state_after=state_after,
                        lazy_request=lazy_request,
                        until=now.events,
                    )
        # Send-to-device ("Extensions to /sync"): at most a page per response.
        result.to_device, to_device_position = await self._to_device.for_sync(
            user_id, requester.device_id, since.to_device if since else None, now.to_device
        )
        result.token = now.advanced(Stream.TO_DEVICE, to_device_position)
        if since is not None:
            # Device lists are only reported relative to a token ("Extensions to /sync").
            result.device_lists = await self._device_lists.changes(user_id, since, now)
        return result

    async def _eager_rooms(
        self, joined: list[RoomID], since: StreamToken | None, now: StreamToken
    ) -> tuple[list[RoomID], set[RoomID]]:
        """For a sync that does not lazy-load members, as Synapse's
        ``get_sync_result_builder``: the joined rooms without those whose state is partial
        (their member list is incomplete, and such a client is never sent the members the
        resync adds), and those of them whose state was completed since the token, sent as
        newly joined, with their full state, however long ago the user joined."""
        partial = self._partial_state
        if partial is None:
            return joined, set()
        kept = [r for r in joined if not partial.is_partial(r)]
        if since is None or since.partial_state >= now.partial_state:
            return kept, set()
        completed = await partial.completed_between(since.partial_state, now.partial_state)
        return kept, completed.intersection(kept)

    async def _timeline(
        self,
        requester: Requester,
        room_id: RoomID,
        after: int,
        until: int,
        sync_filter: Filter,
        *,
        joined: bool = False,
    ) -> tuple[list[StoredEvent], bool]:
        found = await self._room_events.scan(
            requester.user_id,
            room_id,
            after=after or None,
            before=until,
            newest_first=True,
            limit=sync_filter.timeline_limit,
            event_filter=sync_filter.room.timeline,
            current_state_visible=joined,
        )
        found.events.reverse()
        return found.events, found.resume is not None

    async def _state_before(self, event: StoredEvent) -> int | None:
        """The state group just before ``event`` (None: before the room's first state)."""
        if not event.pdu.is_state():
            return event.state_group
        rows = await self._state.state_group_row(event.state_group)
        return rows.prev_group

    async def _joined_room(
        self,
        requester: Requester,
        room_id: RoomID,
        since: int,
        until: int,
        sync_filter: Filter,
        *,
        initial: bool,
        full_state: bool = False,
        has_events: bool,
        incremental: bool,
        state_after: bool,
        lazy_request: int,
    ) -> JsonDict:
        """One room of the join section. ``initial``: the timeline starts from the room's
        latest events (initial sync, newly joined); ``full_state``: all state at the
        timeline's start, while the timeline stays limited by ``since`` (spec, /sync);
        ``state_after``: the state at its end instead (``state_after.py``)."""
        snapshot = await self._state.get_room(room_id)
        assert snapshot is not None
        if initial or has_events:
            timeline, limited = await self._timeline(
                requester, room_id, 0 if initial else since, until, sync_filter, joined=True
            )
        else:
            timeline, limited = [], False
        if initial and incremental:
            # A room joined since the token: its history before the join is a gap to the
            # client (Synapse marks it limited too).
            limited = True
        in_timeline = timeline_state(timeline)
        lazy: frozenset[str] | None = None
        if sync_filter.lazy_load_members:
            # With ``state_after`` the timeline's member events are not state to the
            # client: every sender's member comes in the section.
            lazy = (
                frozenset(e.pdu.sender for e in timeline)
                if state_after
                else in_timeline.needed_members
            )
        state_ids: dict[StateKey, EventID] = {}
        changed: set[StateKey] = set()
        if state_after:
            whole = initial or full_state
            state_ids, changed = await self._state_after.joined(
                snapshot,
                None if whole else since,
                members=lazy | {requester.user_id} if lazy is not None and whole else lazy,
                non_member_keys=self._non_member_keys,
            )
        elif initial or full_state:
            if lazy is not None:
                state_ids = await self._lazy_state_at_start(
                    snapshot, timeline, lazy | {requester.user_id}
                )
            elif timeline:
                state_ids = await self._state_at_start(timeline[0])
            else:
                state_ids = dict(snapshot.state)
            changed = set(state_ids)
        elif limited:
            state_ids, changed = await self._gap(
                room_id, since, until, timeline, in_timeline.contains, lazy
            )
        elif lazy and timeline:
            state_ids = await self._members_at_start(timeline, lazy)
        summary, heroes = await self._summary(snapshot, requester.user_id)
        if lazy is not None:
            # "Lazy-loading room members": the heroes' members are part of the state.
            for hero in heroes:
                key = (MEMBER, hero)
                if key in snapshot.state and (state_after or key not in in_timeline.contains):
                    state_ids.setdefault(key, snapshot.state[key])
        if lazy is not None and not sync_filter.include_redundant_members:
            sent = {} if state_after else in_timeline.contains
            state_ids = self._unheld(
                requester, lazy_request, since, until, state_ids, changed, sent
            )
        timeline_json = await self._events_json(timeline, requester, sync_filter)
        state_json = await self._state_json(state_ids, requester, sync_filter)
        prev_batch = position_token(timeline[0].stream_ordering - 1 if timeline else until)
        return {
            "timeline": {"events": timeline_json, "limited": limited, "prev_batch": prev_batch},
            _STATE_AFTER if state_after else "state": {"events": state_json},
            "summary": summary,
        }

    def _unheld(
        self,
        requester: Requester,
        lazy_request: int,
        since: int,
        until: int,
        state_ids: Mapping[StateKey, EventID],
        changed: set[StateKey],
        in_timeline: Mapping[StateKey, EventID],
    ) -> dict[StateKey, EventID]:
        """``state_ids`` without the member events the device holds as of ``since``
        (those of ``changed`` kept), recorded as sent, with the timeline's members
        (``in_timeline``), by request ``lazy_request`` in a response up to ``until``
        ("Lazy-loading room members" without ``include_redundant_members``)."""
        user_id, device_id = requester.user_id, requester.device_id
        kept = self._lazy_members.drop_sent(user_id, device_id, state_ids, changed, since)
        self._lazy_members.mark_sent(user_id, device_id, lazy_request, until, kept, in_timeline)
        return kept

    async def _events_json(
        self, events: Sequence[StoredEvent], requester: Requester, sync_filter: Filter
    ) -> list[JsonDict]:
        """Events in the filter's ``event_format``, cut to its ``event_fields``. Most
        woken syncs have no state to send (their members were sent before): that costs
        nothing."""
        if not events:
            return []
        serialized = await self._room_events.serialize(
            events,
            requester,
            include_room_id=False,
            federation_format=sync_filter.event_format == "federation",
        )
        return [sync_filter.project_event(e) for e in serialized]

    async def _state_json(
        self, state_ids: Mapping[StateKey, EventID], requester: Requester, sync_filter: Filter
    ) -> list[JsonDict]:
        """The state events of ``state_ids`` that the filter's ``room.state`` keeps
        (most woken syncs have none: their members were sent before)."""
        if not state_ids:
            return []
        found = await self._state.get_state_events_by_id(state_ids.values())
        state_filter = sync_filter.room.state
        kept = [
            found[i]
            for i in state_ids.values()
            if i in found and state_filter.matches(found[i].pdu.data)
        ]
        return await self._events_json(kept, requester, sync_filter)

    async def _was_joined(self, room_id: RoomID, user_id: UserID, position: int) -> bool:
        """Whether ``user_id`` was joined to the room at stream ``position``."""
        last = await self._room_events.last_event(room_id, position)
        if last is None:
            return False
        key: StateKey = (MEMBER, user_id)
        ids = await self._state.state_ids_at_group(last.state_group, [key])
        member = await self._state.get_event(ids[key]) if key in ids else None
        return member is not None and member.pdu.membership == "join"

    async def _members_at_start(
        self, timeline: Sequence[StoredEvent], members: AbstractSet[str]
    ) -> dict[StateKey, EventID]:
        """For a timeline that continues the last response: only ``members``' member
        events, at the timeline's start."""
        group = await self._state_before(timeline[0])
        if group is None:
            return {}
        keys = [(MEMBER, u) for u in members]
        return dict(await self._state.state_ids_at_group(group, keys))

    async def _lazy_state_at_start(
        self, snapshot: RoomSnapshot, timeline: Sequence[StoredEvent], members: AbstractSet[str]
    ) -> dict[StateKey, EventID]:
        """The state at the timeline's start with only ``members``' member events
        ("Lazy-loading room members"), looked up by key: a newcomer's initial sync in a
        room of 10,000 members costs O(its timeline's senders), not O(the room's state).
        State keys never leave a room's state, so its current keys name all there were."""
        keys = [*self._non_member_keys(snapshot), *((MEMBER, u) for u in members)]
        if not timeline:
            return {k: v for k in keys if (v := snapshot.state.get(k)) is not None}
        group = await self._state_before(timeline[0])
        return dict(await self._state.state_ids_at_group(group, keys)) if group is not None else {}

    def _non_member_keys(self, snapshot: RoomSnapshot) -> tuple[StateKey, ...]:
        """The keys of the room's current state other than members' (kept per group)."""
        cache_key = (snapshot.room_id, snapshot.state_group.state_group)
        keys = self._state_keys.get(cache_key)
        if keys is None:
            keys = tuple(k for k in snapshot.state if k[0] != MEMBER)
            self._state_keys.put(cache_key, keys)
        return keys

    async def _gap(
        self,
        room_id: RoomID,
        since: int,
        until: int,
        timeline: Sequence[StoredEvent],
        contains: Mapping[StateKey, EventID],
        lazy: frozenset[str] | None,
    ) -> tuple[dict[StateKey, EventID], set[StateKey]]:
        """The state of a timeline with a gap before it (``gap_state``), and which of it
        changed since the token. When no state changed across the gap (a busy room's
        messages), that is only the lazy-loaded senders' members, looked up by key: the
        work does not grow with the room's state."""
        previous_group = await self._room_events.state_group_at(room_id, since)
        end_group = await self._room_events.state_group_at(room_id, until)
        start_group = await self._state_before(timeline[0]) if timeline else end_group
        if previous_group == start_group == end_group:
            if lazy is None or start_group is None:
                return {}, set()
            keys: list[StateKey] = [(MEMBER, u) for u in lazy]
            found = await self._state.state_ids_at_group(start_group, keys)
            carried = set(contains.values())
            return {k: v for k, v in found.items() if v not in carried}, set()
        previous = await self._group_state(previous_group)
        end = await self._group_state(end_group)
        state_ids = gap_state(
            contains=contains,
            start=await self._group_state(start_group) if timeline else end,
            end=end,
            previous=previous,
            lazy_members=lazy,
        )
        return state_ids, {k for k, v in state_ids.items() if previous.get(k) != v}

    async def _group_state(self, group: int | None) -> Mapping[StateKey, EventID]:
        return await self._state.state_ids_at_group(group) if group is not None else {}

    async def _state_at_start(self, event: StoredEvent) -> dict[StateKey, EventID]:
        group = await self._state_before(event)
        return dict(await self._state.state_ids_at_group(group)) if group is not None else {}

    async def _state_at_position(self, room_id: RoomID, position: int) -> dict[StateKey, EventID]:
        last = await self._room_events.last_event(room_id, position)
        return await self._state.state_ids_at_group(last.state_group) if last else {}

    async def _summary(
        self, snapshot: RoomSnapshot, user_id: UserID
    ) -> tuple[JsonDict, list[UserID]]:
        """The room summary and its heroes (none when the room has a name or alias).
        What it depends on is kept per state group: a message wakes every member's sync,
        and each must not walk the member list again."""
        key = (snapshot.room_id, snapshot.state_group.state_group)
        cached = self._summaries.get(key)
        if cached is None:
            members = member_summary(snapshot.memberships)
            names = {k: v for k in _NAME_FIELDS if (v := snapshot.state.get(k)) is not None}
            events = await self._state.get_state_events(names, _NAME_FIELDS)
            named = any(
                isinstance(name := event.content.get(_NAME_FIELDS[k]), str) and name
                for k, event in events.items()
            )
            cached = (members, named)
            self._summaries.put(key, cached)
        return room_summary(cached[0], user_id, named=cached[1])

    def _forget_room_groups(self, room_id: RoomID) -> None:
        """Drop what is kept per state group of ``room_id``: completing a partial state
        rewrites groups that already existed."""
        for cache in (self._summaries, self._state_keys):
            for key in [k for k in cache if k[0] == room_id]:
                cache.pop(key)
        self._state_after.forget_room(room_id)

    async def _invited_room(self, room_id: RoomID, user_id: UserID) -> tuple[JsonDict, str | None]:
        """The room's stripped state and who sent the user's membership (the inviter)."""
        stripped, sender = await self._invite_state.stripped(room_id, user_id)
        return {"invite_state": {"events": stripped}}, sender

    async def _left_room(
        self,
        requester: Requester,
        room_id: RoomID,
        since: int,
        left_at: int,
        sync_filter: Filter,
        *,
        state_after: bool,
        lazy_request: int,
        until: int,
    ) -> JsonDict:
        """``lazy_request``: the request's number for the lazy-loaded members cache;
        ``until``: the response's events position (what it sends is held from there)."""
        section = _STATE_AFTER if state_after else "state"
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            # A rejected invite to a room this server never joined: nothing to show but
            # the room leaving the invite list.
            return {
                "timeline": {"events": [], "limited": False, "prev_batch": position_token(left_at)},
                section: {"events": []},
                "account_data": {"events": []},
            }
        timeline, limited = await self._timeline(requester, room_id, since, left_at, sync_filter)
        state_ids: dict[StateKey, EventID] = {}
        # All the state for a room the client never saw joined (an initial sync, or
        # joined and left since the token; not a rejected invite); for one it knew, only
        # across a gap.
        user_id = requester.user_id
        full = since == 0 or (
            not await self._was_joined(room_id, user_id, since)
            and await self._was_joined(room_id, user_id, left_at - 1)
        )
        lazy: frozenset[str] | None = None
        in_timeline = timeline_state(timeline)
        if sync_filter.lazy_load_members:
            # "Lazy-loading room members" holds for a left room too (as in Synapse, whose
            # ``compute_state_delta`` serves both): the members of the timeline's senders
            # (with ``state``, those whose member event is not in the timeline), and in a
            # whole section the user's own. A gap keeps every member across it.
            senders = (
                frozenset(e.pdu.sender for e in timeline)
                if state_after
                else in_timeline.needed_members
            )
            lazy = senders | {user_id} if full else senders
        # The keys of the section that changed since the token (None: all of it, as
        # a whole section or a gap's, whose changes are not worked out here).
        changed: set[StateKey] | None = None
        if state_after:
            state_ids, changed = await self._state_after.left(
                room_id, None if full else since, left_at, members=lazy
            )
        elif timeline and full and lazy is not None:
            state_ids = await self._lazy_state_at_start(snapshot, timeline, lazy)
        elif timeline and (full or limited):
            state_ids = await self._state_at_start(timeline[0])
        elif full:
            state_ids = await self._state_at_position(room_id, left_at)
        elif lazy and timeline:
            state_ids, changed = await self._members_at_start(timeline, lazy), set()
        if lazy is not None and full and not state_after:
            state_ids = only_members(state_ids, lazy)
        if lazy is not None and not sync_filter.include_redundant_members:
            # As for a joined room: what this device holds is not sent again.
            changed = set(state_ids) if changed is None else changed
            sent = {} if state_after else in_timeline.contains
            state_ids = self._unheld(
                requester, lazy_request, since, until, state_ids, changed, sent
            )
        return {
            "timeline": {
                "events": await self._events_json(timeline, requester, sync_filter),
                "limited": limited,
                "prev_batch": position_token(
                    timeline[0].stream_ordering - 1 if timeline else left_at
                ),
            },
            section: {"events": await self._state_json(state_ids, requester, sync_filter)},
            "account_data": {"events": []},
        }


def max_token(a: StreamToken, b: StreamToken) -> StreamToken:
    """Stream-wise maximum: never hand a client a token behind one it already had."""
    return StreamToken(*(max(x, y) for x, y in zip(a.positions(), b.positions(), strict=True)))
