"""The ``rooms`` of a sliding sync response (MSC4186, "Room response"; Synapse's
``SlidingSyncHandler.get_room_sync_data``).

A room new to the connection is sent whole (``initial``); one sent before, only what
changed since: new timeline events, state of ``required_state`` whose event changed or
that a widened ``required_state`` now selects, and ``name``, ``avatar``, ``heroes`` and
the member counts when they changed. Timelines and state events of all rooms are
serialised in one call each (bundled aggregations on ``limited`` timelines only, as
Synapse), and the unread counts read in one query.

A response's timelines carry at most ``max_timeline_events`` events over all its rooms
(``timeline_limits``), plus one per room past it: one request may otherwise ask up to
1,000 events of each of thousands of rooms, hundreds of MB read and serialised at once
for one user. A room past the budget gets a shorter page (``limited`` when it leaves a
gap); its connection records the shorter page, so later responses send it whole
(``unstable_expanded_timeline``) as their own budgets allow, while the room is in view,
and until then only its new events, if any.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from peyvand.events.pdu import Pdu, StateKey
from peyvand.lru import LRU
from peyvand.services.accounts.requester import Requester
from peyvand.services.rooms.reads import RoomEventsService, position_token
from peyvand.services.rooms.visibility import IgnoredBy
from peyvand.services.sync.invite_state import InviteState
from peyvand.services.sync.sliding.bump_stamps import BUMP_EVENT_TYPES, BumpStamps
from peyvand.services.sync.sliding.connections import SentRoom
from peyvand.services.sync.sliding.initial_timelines import InitialTimelines, PageKey, RoomMark
from peyvand.services.sync.sliding.request import RoomParams
from peyvand.services.sync.sliding.required_state import MEMBER, select
from peyvand.services.sync.sliding.room_lists import UserRoom
from peyvand.services.sync.state_section import MemberSummary, member_summary, room_summary
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, JsonDict, RoomID, UserID

_NAME: StateKey = ("m.room.name", "")
_AVATAR: StateKey = ("m.room.avatar", "")
# Rooms whose member summary, name and avatar, and heroes are kept (per state group).
_SUMMARIES = 4096

# (user, rooms, per thread) -> each room with unread notifications -> its counts.
UnreadCounts = Callable[[UserID, Sequence[RoomID], bool], Awaitable[dict[RoomID, JsonDict]]]


@dataclass(frozen=True, slots=True)
class RoomRequest:
    """A room to answer: how the user is in it, what is asked, what was sent before."""

    room: UserRoom
    params: RoomParams
    sent: SentRoom | None


@dataclass(frozen=True, slots=True)
class _Stripped:
    """An invite's or a knock's answer: its stripped state."""

    request: RoomRequest
    body: JsonDict


@dataclass(frozen=True, slots=True)
class _Request:
    """What every room of one response is answered with."""

    requester: Requester
    since: int | None
    until: int
    # Each joined room's newest bump event and newest event of any type.
    bumps: Mapping[RoomID, int]
    newest: Mapping[RoomID, int]
    # The users the requester ignores, and the event cache's epoch.
    ignored: frozenset[UserID]
    epoch: int
    # The rooms whose timeline the response's budget cuts short, and the limit of each.
    limits: Mapping[RoomID, int]


@dataclass(slots=True)
class _Draft:
    """One room's answer before its events are serialised."""

    request: RoomRequest
    body: JsonDict
    timeline: list[StoredEvent]
    state: dict[StateKey, EventID]
    sent: SentRoom


class RoomResponses:
    def __init__(
        self,
        state: StateService,
        room_events: RoomEventsService,
        invite_state: InviteState,
        unread_counts: UnreadCounts,
        bump_stamps: BumpStamps,
        ignored_by: IgnoredBy,
        *,
        max_timeline_events: int,
    ) -> None:
        """``bump_stamps``: each room's newest bump event and newest event;
        ``ignored_by``: whom a user ignores (their events are not in timelines);
        ``max_timeline_events``: the timeline events of one response, over all its rooms
        (``timeline_limits``)."""
        self._state = state
        self._room_events = room_events
        self._invite_state = invite_state
        self._unread_counts = unread_counts
        self._bump_stamps = bump_stamps
        self._ignored_by = ignored_by
        self._max_timeline_events = max_timeline_events
        self._summaries: LRU[tuple[RoomID, int], MemberSummary] = LRU(_SUMMARIES)
        self._names: LRU[tuple[RoomID, int], tuple[str | None, str | None]] = LRU(_SUMMARIES)
        self._hero_lists: LRU[tuple[RoomID, int, tuple[UserID, ...]], list[JsonDict]] = LRU(
            _SUMMARIES
        )
        self._initial_timelines = InitialTimelines()

    async def build(
        self,
        requester: Requester,
        rooms: Sequence[RoomRequest],
        *,
        since: int | None,
        until: int,
        direct: frozenset[RoomID],
    ) -> tuple[dict[RoomID, JsonDict], dict[RoomID, SentRoom]]:
        """The response's room entries (rooms with nothing new left out) and what the
        connection now holds of every room answered."""
        joined = [r.room.room_id for r in rooms if r.room.membership == "join"]
        context = _Request(
            requester,
            since,
            until,
            await self._bump_stamps.bump_stamps(joined) if joined else {},
            await self._bump_stamps.stamps(joined) if joined else {},
            await self._ignored_by(requester.user_id) if joined else frozenset(),
            self._state.forget_epoch,
            timeline_limits(
                rooms, self._max_timeline_events, functools.partial(self._reads, until=until)
            ),
        )
        # The unread counts are read while the rooms are drafted: their reads (a room's
        # timeline not held in memory, the counts) wait on the database together. One
        # room (a woken long-poll's, whose counts were kept before it waited) is
        # answered without tasks: each costs a turn of the event loop.
        if len(rooms) > 1:
            counts, answers = await asyncio.gather(
                self._counts(requester.user_id, rooms), self._answers(context, rooms)
            )
        else:
            counts = await self._counts(requester.user_id, rooms)
            answers = await self._answers(context, rooms)
        drafts = [a for a in answers if isinstance(a, _Draft)]
        stripped = [a for a in answers if isinstance(a, _Stripped)]
        bodies: dict[RoomID, JsonDict] = {}
        sent: dict[RoomID, SentRoom] = {}
        for draft in drafts:
            room_id = draft.request.room.room_id
            sent[room_id] = draft.sent
            if not _has_news(draft.body):
                continue
            section = counts.get(room_id, {})
            unread = section.get("unread_notifications", {})
            draft.body["notification_count"] = unread.get("notification_count", 0)
            draft.body["highlight_count"] = unread.get("highlight_count", 0)
            if threads := section.get("unread_thread_notifications"):
                draft.body["unread_thread_notifications"] = threads
            if room_id in direct:
                draft.body["is_dm"] = True
            bodies[room_id] = draft.body
        for answer in stripped:
            room_id = answer.request.room.room_id
            if room_id in direct:
                answer.body["is_dm"] = True
            bodies[room_id] = answer.body
            sent[room_id] = _sent_stripped(answer.request)
        return bodies, sent

    def _reads(self, request: RoomRequest, *, until: int) -> int:
        """The most timeline events a room's answer reads: its ``timeline_limit``, or for
        a joined room sent before at no smaller limit (new events only), the events after
        what it was sent when they are all known here."""
        asked = request.params.timeline_limit
        sent = request.sent
        if (
            sent is None
            or request.room.membership != "join"
            or sent.membership != "join"
            or asked > sent.timeline_limit
        ):
            return asked
        arrived = self._bump_stamps.arrivals(request.room.room_id, sent.position, until)
        return asked if arrived is None else min(asked, len(arrived))

    async def keep_counts(self, user_id: UserID, room_ids: Iterable[RoomID]) -> None:
        """Have the unread counts (not split by thread) of ``room_ids`` kept."""
        await self._unread_counts(user_id, list(room_ids), False)

    async def _answers(
        self, context: _Request, rooms: Sequence[RoomRequest]
    ) -> list[_Draft | _Stripped | None]:
        """Each room's answer (None: nothing to send), the rooms (when more than one)
        drafted concurrently so that those whose timeline is read from the database wait
        together; then the drafts' events serialised in one call."""
        if len(rooms) == 1:
            answers = [await self._answer(context, rooms[0])]
        else:
            answers = await asyncio.gather(*(self._answer(context, r) for r in rooms))
        drafts = [a for a in answers if isinstance(a, _Draft)]
        await self._serialise(context.requester, drafts)
        return answers

    async def _answer(self, context: _Request, request: RoomRequest) -> _Draft | _Stripped | None:
        """An invite or a knock new to the connection gets its stripped state; a room
        joined, left or banned its draft."""
        room = request.room
        if room.membership in ("invite", "knock"):
            if request.sent is not None and request.sent.membership == room.membership:
                return None
            return _Stripped(request, await self._stripped_room(context.requester, room))
        return await self._draft(context, request)

    async def _counts(
        self, user_id: UserID, rooms: Sequence[RoomRequest]
    ) -> dict[RoomID, JsonDict]:
        """The unread counts of the joined rooms (/sync's sections): split by thread for
        those whose params ask (``unread_thread_notifications``, as /sync: the main
        timeline's in ``unread_notifications``, each thread's by its root), whole for the
        others; one read each."""
        whole: list[RoomID] = []
        split: list[RoomID] = []
        for request in rooms:
            if request.room.membership == "join":
                threads = request.params.unread_thread_notifications
                (split if threads else whole).append(request.room.room_id)
        counts = await self._unread_counts(user_id, whole, False) if whole else {}
        if split:
            counts.update(await self._unread_counts(user_id, split, True))
        return counts

    async def _stripped_room(self, requester: Requester, room: UserRoom) -> JsonDict:
        """An invite or knock: its stripped state (``invite_state``, ``knock_state``),
        with the name and avatar it tells."""
        events, _ = await self._invite_state.stripped(room.room_id, requester.user_id)
        body: JsonDict = {
            "initial": True,
            "bump_stamp": room.bump_stamp,
            "notification_count": 0,
            "highlight_count": 0,
            ("invite_state" if room.membership == "invite" else "knock_state"): events,
        }
        for event in events:
            content = event.get("content")
            if not isinstance(content, dict) or event.get("state_key") != "":
                continue
            if event.get("type") == "m.room.name" and isinstance(name := content.get("name"), str):
                if name:
                    body["name"] = name
            elif event.get("type") == "m.room.avatar" and isinstance(
                url := content.get("url"), str
            ):
                body["avatar"] = url
        return body

    async def _draft(self, context: _Request, request: RoomRequest) -> _Draft | None:
        """A joined, left or banned room's answer (its events not yet serialised)."""
        room, params, sent = request.room, request.params, request.sent
        user_id = context.requester.user_id
        since, until = context.since, context.until
        limit = context.limits.get(room.room_id, params.timeline_limit)
        snapshot = await self._state.get_room(room.room_id)
        if snapshot is None:
            return _unheld_room(request) if room.membership == "leave" else None
        member = room.membership == "join"
        end = until if member else min(until, room.membership_position)
        # Sent before, the room gets what is new since (a leave, a kick or a ban too:
        # the events up to it); newly joined, it is sent whole (Synapse's
        # ``newly_joined``).
        newly_joined = sent is not None and member and sent.membership != "join"
        prev = None if newly_joined else sent
        # "unstable_expanded_timeline" (Synapse, after the sliding sync proxy): a room
        # whose timeline_limit grew gets its latest events again, a full page. One the
        # budget cuts to no more than it was sent waits for a later response, and gets
        # its new events meanwhile.
        expanded = prev is not None and limit > prev.timeline_limit
        after = None if prev is None or expanded else prev.position
        if member and after is None:
            timeline, limited = await self._initial_timeline(context, room, snapshot, limit, end)
        else:
            timeline, limited = await self._timeline(
                user_id, room.room_id, limit, after, end, member
            )
        state = snapshot.state if member else await self._state_at(room.room_id, end)
        group = snapshot.state_group.state_group if member else None
        named, avatar = await self._name_and_avatar(room.room_id, group, state)
        heroes: list[UserID] = []
        counts: tuple[int, int] | None = None
        if member:
            summary = self._summary(snapshot)
            _, heroes = room_summary(summary, user_id, named=bool(named))
            counts = (summary.joined, summary.invited)
        # ``$LAZY``: the members of the timeline's senders and of its member events'
        # targets (an invite, a kick), as Synapse (the heroes' come with ``heroes``).
        lazy = _timeline_members(timeline) if params.lazy_members else set()
        selected = select(params.required_state, state, user_id, lazy)
        # The heroes' member events too: a hero's new display name or avatar is sent.
        members_meta: tuple[object, ...] = (
            counts,
            tuple(heroes),
            tuple(state.get((MEMBER, h)) for h in heroes),
        )
        previous = prev.state if prev is not None else {}
        body: JsonDict = {}
        if prev is None:
            body["initial"] = True
        if expanded:
            body["unstable_expanded_timeline"] = True
        if named and (prev is None or state.get(_NAME) != prev.name):
            body["name"] = named
        if avatar and (prev is None or state.get(_AVATAR) != prev.avatar):
            body["avatar"] = avatar
        if prev is None or members_meta != prev.members:
            if counts is not None:
                body["joined_count"], body["invited_count"] = counts
            if heroes:
                body["heroes"] = await self._heroes(snapshot, heroes)
        new_state = {k: v for k, v in selected.items() if previous.get(k) != v}
        if params.timeline_limit > 0:
            body["limited"] = limited
            body["prev_batch"] = position_token(
                timeline[0].stream_ordering - 1 if timeline else end
            )
            body["num_live"] = (
                sum(1 for e in timeline if e.stream_ordering > since) if since is not None else 0
            )
        stamp = _bump_stamp(
            room,
            timeline,
            context.bumps.get(room.room_id),
            always=not member or params.timeline_limit == 0 or limited or prev is None,
        )
        if stamp is not None:
            body["bump_stamp"] = stamp
        kept = {**previous, **selected}
        return _Draft(
            request,
            body,
            timeline,
            new_state,
            SentRoom(
                end,
                room.membership,
                params.required_state,
                kept,
                state.get(_NAME),
                state.get(_AVATAR),
                members_meta,
                # A page read from the room's newest events back that the budget cut
                # short is the page asked for unless it left a gap; new events alone
                # leave the client the page it had.
                _sent_timeline_limit(
                    prev,
                    params.timeline_limit if after is None and not limited else limit,
                    limited=limited,
                ),
            ),
        )

    async def _timeline(
        self,
        user_id: UserID,
        room_id: RoomID,
        limit: int,
        after: int | None,
        end: int,
        member: bool,
    ) -> tuple[list[StoredEvent], bool]:
        """Up to ``limit`` events the user may see in ``(after, end]``, oldest first, and
        whether more are left before them (``limited``)."""
        if limit == 0 or (after is not None and after >= end):
            return [], False
        found = await self._room_events.scan(
            user_id,
            room_id,
            after=after,
            before=end,
            newest_first=True,
            limit=limit,
            event_filter=None,
            current_state_visible=member,
        )
        return found.events[::-1], found.resume is not None

    async def _initial_timeline(
        self,
        context: _Request,
        room: UserRoom,
        snapshot: RoomSnapshot,
        limit: int,
        end: int,
    ) -> tuple[list[StoredEvent], bool]:
        """``_timeline`` of a room new to the connection that the user is joined to,
        kept while the room is as it was (``initial_timelines``)."""
        key = PageKey(context.requester.user_id, room.room_id, room.membership_position, limit)
        mark = RoomMark(
            context.newest.get(room.room_id, 0),
            snapshot.state_group.state_group,
            context.epoch,
            self._state.redaction_count,
            context.ignored,
        )
        kept = self._initial_timelines.get(key, mark)
        if kept is not None:
            return kept, True
        moved = self._initial_timelines.moved(key, mark)
        if moved is not None:
            extended = await self._extended(context.requester.user_id, room, limit, moved, end)
            if extended is not None:
                self._initial_timelines.put(key, mark, extended, limited=True, end=end)
                return extended, True
        newest = await self._newest_page(context.requester.user_id, room, limit, end)
        if newest is not None:
            self._initial_timelines.put(key, mark, newest, limited=True, end=end)
            return newest, True
        timeline, limited = await self._timeline(
            context.requester.user_id, room.room_id, limit, None, end, True
        )
        self._initial_timelines.put(key, mark, timeline, limited=limited, end=end)
        return timeline, limited

    async def _newest_page(
        self, user_id: UserID, room: UserRoom, limit: int, end: int
    ) -> list[StoredEvent] | None:
        """A joined member's page when the room's newest ``limit`` events are
        known here (``BumpStamps.latest``), all after the user's membership event and all
        visible to them: those, ``limited``, since the user's own membership event is an
        older event they see. None otherwise."""
        latest = self._bump_stamps.latest(room.room_id, end, limit)
        if not latest or latest[0].position <= room.membership_position:
            return None
        found = await self._room_events.scan(
            user_id,
            room.room_id,
            after=latest[0].position - 1,
            before=end,
            newest_first=True,
            limit=limit,
            event_filter=None,
            current_state_visible=True,
        )
        return found.events[::-1] if len(found.events) == limit else None

    async def _extended(
        self,
        user_id: UserID,
        room: UserRoom,
        limit: int,
        kept: tuple[list[StoredEvent], int],
        end: int,
    ) -> list[StoredEvent] | None:
        """A kept ``limited`` page read with the room's newest event at ``kept[1]``,
        brought up to ``end``: the newest of its events and the visible ones after it,
        when the room's events after it are all known (``BumpStamps.arrivals``); None
        otherwise. A redaction since is no concern here: it moved the page's mark
        (``RoomMark.redactions``), so ``InitialTimelines.moved`` found no page. Still
        ``limited``: every older visible event it counted still is."""
        events, position = kept
        if position >= end:
            return None
        arrived = self._bump_stamps.arrivals(room.room_id, position, end)
        if arrived is None:
            return None
        if not arrived:
            return events
        # No event of the room lies between the page and the first arrival: the scan
        # from there reads the new events alone (held by the recent events).
        found = await self._room_events.scan(
            user_id,
            room.room_id,
            after=arrived[0].position - 1,
            before=end,
            newest_first=True,
            limit=limit,
            event_filter=None,
            current_state_visible=True,
        )
        return [*events, *found.events[::-1]][-limit:]

    async def _serialise(self, requester: Requester, drafts: Sequence[_Draft]) -> None:
        """Every draft's timeline and state as client events, in one call each."""
        wanted = [i for d in drafts for i in d.state.values()]
        found = await self._state.get_state_events_by_id(wanted)
        state_events = [[found[i] for i in d.state.values() if i in found] for d in drafts]
        # Without ``room_id`` (the spec's ``ClientEventWithoutRoomID``, Synapse's
        # ``ClientV2WithoutRoomId``; Synapse 1.163 leaves it only in a version 12
        # ``m.room.create``, whose room ID is derived from it: not followed).
        flat = [e for d in drafts for e in d.timeline] + [e for s in state_events for e in s]
        # Bundled aggregations only on a ``limited`` timeline, as Synapse: otherwise the
        # client holds every event it needs to aggregate them itself.
        served = await self._room_events.serialize(
            flat,
            requester,
            include_room_id=False,
            bundle=[e for d in drafts if d.body.get("limited") for e in d.timeline],
        )
        at = 0
        for draft in drafts:
            if draft.timeline:
                draft.body["timeline"] = served[at : at + len(draft.timeline)]
            at += len(draft.timeline)
        for draft, events in zip(drafts, state_events, strict=True):
            if events:
                draft.body["required_state"] = served[at : at + len(events)]
            at += len(events)

    async def _state_at(self, room_id: RoomID, position: int) -> Mapping[StateKey, EventID]:
        """The room's state at stream ``position`` (a left room's, at the leave)."""
        group = await self._room_events.state_group_at(room_id, position)
        return await self._state.state_ids_at_group(group) if group is not None else {}

    def _summary(self, snapshot: RoomSnapshot) -> MemberSummary:
        """The member counts and hero candidates, kept per state group."""
        key = (snapshot.room_id, snapshot.state_group.state_group)
        summary = self._summaries.get(key)
        if summary is None:
            summary = member_summary(snapshot.memberships)
            self._summaries.put(key, summary)
        return summary

    async def _name_and_avatar(
        self, room_id: RoomID, group: int | None, state: Mapping[StateKey, EventID]
    ) -> tuple[str | None, str | None]:
        """The room's name and avatar in ``state``, kept per state ``group`` (None: not
        kept)."""
        kept = self._names.get((room_id, group)) if group is not None else None
        if kept is not None:
            return kept
        meta = await self._state.get_state_events(state, [_NAME, _AVATAR])
        found = (_content_str(meta, _NAME, "name"), _content_str(meta, _AVATAR, "url"))
        if group is not None:
            self._names.put((room_id, group), found)
        return found

    async def _heroes(self, snapshot: RoomSnapshot, heroes: Sequence[UserID]) -> list[JsonDict]:
        """Each hero with the display name and avatar of their member event in the
        room's current state, kept per state group (the lists are never changed)."""
        key = (snapshot.room_id, snapshot.state_group.state_group, tuple(heroes))
        kept = self._hero_lists.get(key)
        if kept is not None:
            return kept
        state = snapshot.state
        events = await self._state.get_state_events(state, [(MEMBER, u) for u in heroes])
        out: list[JsonDict] = []
        for user_id in heroes:
            hero: JsonDict = {"user_id": user_id}
            pdu = events.get((MEMBER, user_id))
            if pdu is not None:
                if isinstance(name := pdu.content.get("displayname"), str):
                    hero["displayname"] = name
                if isinstance(url := pdu.content.get("avatar_url"), str):
                    hero["avatar_url"] = url
            out.append(hero)
        self._hero_lists.put(key, out)
        return out


def timeline_limits(
    rooms: Sequence[RoomRequest], budget: int, reads: Callable[[RoomRequest], int]
) -> dict[RoomID, int]:
    """The rooms whose timeline a response cuts short to carry at most ``budget`` events
    in all, each with the limit it gets. When the ``timeline_limit``s asked fit, none
    (nothing else is looked at). Else, in the response's order, rooms spend the budget
    by what they would read at most (``reads``: their limit, or fewer, such as the new
    events of a room sent before), and those past it get what is left, at least one
    event. The budget is never below the most a room would read, so the first room is
    never cut (else a room asking more than the budget would never get its page).
    Invites and knocks have no timeline."""
    timed = [r for r in rooms if r.room.membership not in ("invite", "knock")]
    if sum(r.params.timeline_limit for r in timed) <= budget:
        return {}
    charges = [(r.room.room_id, reads(r)) for r in timed]
    left = max(budget, *(charge for _, charge in charges))
    cut: dict[RoomID, int] = {}
    for room_id, charge in charges:
        granted = charge if charge <= left else max(1, left)
        if granted < charge:
            cut[room_id] = granted
        left = max(0, left - granted)
    return cut


def _bump_stamp(
    room: UserRoom, timeline: Sequence[StoredEvent], newest_bump: int | None, *, always: bool
) -> int | None:
    """The room's ``bump_stamp`` as Synapse's ``get_room_sync_data`` sends it: the
    newest bump event of the timeline; else, when the client may lack it (``always``:
    the room is new to the connection, not joined, or its timeline ``limited`` or not
    asked for), the room's newest bump event, or the user's membership event for a room
    not joined or without any. None (left out) when it did not change."""
    if room.membership == "join":
        for event in reversed(timeline):
            if event.pdu.type in BUMP_EVENT_TYPES and event.stream_ordering > 0:
                return event.stream_ordering
        if not always:
            return None
        if newest_bump is not None and newest_bump > 0:
            return newest_bump
    return max(room.membership_position, 0) if always else None


def _unheld_room(request: RoomRequest) -> _Draft | None:
    """A rejected invite to a room on another server: this server holds neither its state
    nor the leave (sent to the inviting server only). As /sync's ``leave`` section for it,
    the room is sent once, without timeline or state, with the user's ``membership``
    (MSC4186, "Common fields"), so that the client drops the invite; Synapse sends its
    out-of-band leave event instead. Nothing to send to a connection that holds it."""
    room, params, sent = request.room, request.params, request.sent
    if sent is not None and sent.membership == "leave":
        return None
    body: JsonDict = {"initial": True, "membership": "leave", "bump_stamp": room.bump_stamp}
    if params.timeline_limit > 0:
        body["limited"] = False
        body["prev_batch"] = position_token(room.membership_position)
        body["num_live"] = 0
    return _Draft(request, body, [], {}, _sent_stripped(request))


def _sent_stripped(request: RoomRequest) -> SentRoom:
    """What the connection holds of a room it was sent without its state: an invite,
    a knock, a left room not held here."""
    room, params = request.room, request.params
    return SentRoom(
        room.membership_position,
        room.membership,
        params.required_state,
        {},
        None,
        None,
        (),
        params.timeline_limit,
    )


def _timeline_members(timeline: Sequence[StoredEvent]) -> set[str]:
    """The users ``$LAZY`` loads the members of: each event's sender and each member
    event's target."""
    members: set[str] = set()
    for event in timeline:
        pdu = event.pdu
        members.add(pdu.sender)
        if pdu.type == MEMBER and pdu.state_key is not None:
            members.add(pdu.state_key)
    return members


def _sent_timeline_limit(prev: SentRoom | None, asked: int, *, limited: bool) -> int:
    """The timeline_limit the connection has been served with, as Synapse records it:
    a smaller one counts only when it left a gap (``limited``); otherwise the client
    still holds the larger page."""
    if prev is None or asked > prev.timeline_limit or limited:
        return asked
    return prev.timeline_limit


def _content_str(events: Mapping[StateKey, Pdu], key: StateKey, field: str) -> str | None:
    """A non-empty string field of the state event at ``key``, if any."""
    pdu = events.get(key)
    value = pdu.content.get(field) if pdu is not None else None
    return value if isinstance(value, str) and value else None


def _has_news(body: JsonDict) -> bool:
    """Whether a room's answer says anything new (Synapse's ``RoomResult.__bool__``)."""
    return any(
        k in body
        for k in (
            "initial",
            "name",
            "avatar",
            "heroes",
            "joined_count",
            "timeline",
            "required_state",
        )
    )
