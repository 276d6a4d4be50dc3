"""Unread notification counts (Client-Server API, "Push Notifications": "Receiving
notifications", "Marking notifications as read"; /sync's ``unread_notifications``),
at a cost per message that does not grow with the room's members (issue 15).

Write time. Just before each group commit, ``prepare`` (an ``EventWriter`` pre-commit
hook) evaluates every new event once for its room's local joined members
(``events.push_rules.evaluation``) and writes, in the events' own transaction (so counts
are exactly as durable as the events and the sync an event wakes already counts it):

- the event's *room outcome*, the actions for a member with the default rules whom the
  event does not name: one ``push_room_notifications`` row if it notifies, whatever
  the room's size, holding the room's running counts (``storage.push_actions``);
- an *exception* row per member whose outcome differs: mentioned (highlight), custom
  rules (a muted room, a keyword, the master rule on). Members are grouped by compiled
  ruleset (``_RoomContext``, built once per loaded room with rulesets read in bulk, then
  kept up to date one membership change at a time and regrouped whenever any local
  user's push rules change); a group whose
  rules nothing in the event can tell apart (``EventEvaluation.uniform_actions``: no
  mention, invite or display-name test left) is decided at once, so the default-rules
  members of a room cost nothing each for an ordinary message, and each member of a
  group that has such tests left costs O(1) set or string look-ups;
- a read mark for a local sender and for a local member kicked or banned. Sending an
  event reads up to it in its thread only ('main' or the thread root), as a threaded
  receipt would and as Synapse counts; a membership event (joining) and being removed
  read the whole room.

Backfilled history (positions below zero) never notifies. Only joined members are
evaluated: counts exist for joined rooms only, so an invite's ``.m.rule.invite_for_me``
stores nothing.

Read time. The unread count of user U in room R counts the room rows and U's exceptions
after the later of U's read receipt (``m.read`` or ``m.read.private``) and U's read
mark: a few index look-ups per room, however many events are unread. "Threaded read
receipts": an unthreaded receipt reads every thread, a ``main`` one the main timeline,
one in a thread that thread, each count taken from the running counts of its thread
(``storage.unread_counts``); a /sync filter's ``unread_thread_notifications`` splits
the counts per thread. Events from users
U ignores (``m.ignored_user_list``) are taken out then, from the rows' senders, so
ignoring (or no longer ignoring) someone changes the counts at once. Rows read stay:
counts start after the read position whatever lies before it, and GET /notifications
lists read events as they notified (a muted room's stay out, a mention keeps its
highlight); room rows and exceptions live as long as their events (purging an event
deletes its rows).

Ordering. Running counts need each room's rows inserted in stream order: positions are
allocated under the room's lock, enqueued in that order, and the one ``EventWriter``
commits its queue in order (a failed batch is retried in parts, rooms kept whole, and
the inserts compute the counts from the rows before them, so a retry writes the same).
Several writers (issue 21) would have to keep that per room: each room's events
persisted by one writer (rooms sharded between writers), or the counts computed at
read time from a position every writer has passed.

Pushes (issue 17, ``services.push.delivery``). For the local members who have pushers
(``pushed_users``: the pool's set, intersected with the room's members from whichever
is smaller) the evaluation also keeps each one's full actions (sound and tweaks
included) when they notify; the pool takes them once the events are committed
(``take_pushes``), so rules are evaluated once per event for counts and pushes alike.

Listing notifications (issue 17, GET /notifications). A user's notifying events in a
room are the room rows within the user's joined ranges (from their membership events;
exceptions are only written for joined members), less the user's own events, those of
users they ignore and their exceptions with ``notify = -1``, plus their exceptions with
``notify = 1``; highlight likewise. A room row carries its event ID, sender and thread,
so the listing is a merge of two index range scans per room, and the actions themselves
(sound, tweaks) can be evaluated again for the listed events only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from peyvand.events.auth import get_user_power_level
from peyvand.events.auth.power_levels import CREATE_KEY, POWER_LEVELS_KEY
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.push_rules.actions import Actions
from peyvand.events.push_rules.compiled import CompiledRuleset
from peyvand.events.push_rules.conditions import notification_levels
from peyvand.events.push_rules.evaluation import EventEvaluation
from peyvand.events.push_rules.ruleset import Ruleset
from peyvand.events.serialize import client_event
from peyvand.lru import LRU
from peyvand.services.timeline.event_thread import MAIN_THREAD, RelationLookup, threads_of
from peyvand.services.timeline.event_writer import TxnWrite
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.database import Connection
from peyvand.storage.models import EventToPersist
from peyvand.storage.push_actions import (
    PushActionStore,
    ReadUpTo,
    RoomNotification,
    UserException,
)
from peyvand.storage.relations import StoredRelation
from peyvand.storage.unread_counts import UnreadCount
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

# Rooms whose evaluation context is kept (one per room, kept up to date).
_CONTEXT_CACHE_SIZE: Final = 10_000
# Events whose pushes wait for their commit (a failed commit leaves its entries here).
_PENDING_PUSHES_SIZE: Final = 10_000
# Events whose rows are remembered for ``counted`` (a few ints each, the recent ones).
_WRITTEN_SIZE: Final = 10_000
_LEFT: Final = frozenset({"leave", "ban"})
# Whom the room outcome is evaluated for: no event can name it (no string accepted from
# a client or another server holds U+0000), so no per-user rule matches it.
_NOBODY: Final = UserID("\x00nobody")
# The compiled default rules, shared by every user without rules of their own.
_DEFAULT_RULES: Final = Ruleset(_NOBODY).compiled

IgnoredUsers = Callable[[UserID], Awaitable[frozenset[UserID]]]
PushedUsers = Callable[[], Set[UserID]]


def _nobody_pushed() -> Set[UserID]:
    return frozenset()


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """A committed event and the actions of each local member with pushers whom it
    notifies (never its sender)."""

    event: EventToPersist
    actions: dict[UserID, Actions]


class ReadPositions(Protocol):
    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, int]:
        """room_id -> the position of the user's furthest unthreaded read receipt."""
        ...


class Rulesets(Protocol):
    @property
    def version(self) -> int: ...

    async def get_rulesets(self, user_ids: Iterable[str]) -> Mapping[str, Ruleset]: ...


@dataclass(slots=True)
class _RoomContext:
    """What evaluating an event needs from one room's current state and the local
    members' push rules at one ``Rulesets.version``. It follows its room snapshot's
    membership changes (``RoomSnapshot.changed_since``) one member at a time, so a join
    costs O(1) here, not a regrouping of every member (issue 15)."""

    # The snapshot followed (a room reloaded after a failed write starts again) and
    # its ``membership_seq`` when this context was last brought up to date.
    snapshot: RoomSnapshot
    membership_seq: int
    rules_version: int
    # The event IDs of the create and power-levels events read into ``auth_state``.
    auth_ids: tuple[EventID | None, EventID | None]
    member_count: int
    # The local joined members grouped by compiled ruleset (ordered sets).
    groups: dict[CompiledRuleset, dict[UserID, None]]
    ruleset_of: dict[UserID, CompiledRuleset]
    display_names: dict[UserID, str]
    auth_state: Mapping[StateKey, Pdu]
    notification_levels: Mapping[str, int]

    def add(self, user_id: UserID, compiled: CompiledRuleset) -> None:
        self.ruleset_of[user_id] = compiled
        self.groups.setdefault(compiled, {})[user_id] = None

    def remove(self, user_id: UserID) -> None:
        compiled = self.ruleset_of.pop(user_id, None)
        if compiled is not None:
            members = self.groups[compiled]
            del members[user_id]
            if not members:
                del self.groups[compiled]


@dataclass(slots=True)
class _Writes:
    """What one batch writes."""

    notifications: list[RoomNotification]
    exceptions: list[UserException]
    # (user, room, thread or '' for the whole room) -> read up to; one entry per key
    # however many events it sent.
    read: dict[tuple[UserID, RoomID, str], int]
    pushes: list[PushOutcome]
    # Each event's thread (``threads_of``).
    threads: dict[EventID, str]


@dataclass(slots=True)
class _Written:
    """The counts one event's rows hold: its room row (notifications, highlights) and
    each member's difference from it (their exception row), in its ``thread``."""

    room: tuple[int, int] = (0, 0)
    differences: dict[UserID, tuple[int, int]] = field(default_factory=dict)
    thread: str = MAIN_THREAD


@dataclass(frozen=True, slots=True)
class Counted:
    """What one committed event adds to a user's unread counts once it is after their
    read position: notifications and highlights, in its thread (``MAIN_THREAD`` or the
    root's event ID)."""

    notifications: int
    highlights: int
    thread: str


class PushActionsService:
    def __init__(
        self,
        server_name: ServerName,
        store: PushActionStore,
        state: StateService,
        rulesets: Rulesets,
        receipts: ReadPositions,
        ignored_users: IgnoredUsers,
        pushed_users: PushedUsers = _nobody_pushed,
        *,
        relations: RelationLookup,
    ) -> None:
        """``relations``: the stored relations of the events a batch relates to, for
        their threads (``event_thread``)."""
        self._server_name = server_name
        self._relations = relations
        self._store = store
        self._state = state
        self._rulesets = rulesets
        self._receipts = receipts
        self._ignored_users = ignored_users
        self._pushed_users = pushed_users
        self._pending_pushes: LRU[EventID, PushOutcome] = LRU(_PENDING_PUSHES_SIZE)
        self._contexts: LRU[RoomID, _RoomContext] = LRU(_CONTEXT_CACHE_SIZE)
        # event -> what its room row counts, and each member whose outcome differs.
        self._written: LRU[EventID, _Written] = LRU(_WRITTEN_SIZE)

    # -- write time -------------------------------------------------------------------

    async def prepare(self, batch: Sequence[EventToPersist]) -> TxnWrite | None:
        """The ``EventWriter`` pre-commit hook: evaluate ``batch`` and return the write
        for its transaction. Evaluation errors are logged, never raised: they must not
        fail the events themselves."""
        try:
            writes = await self._evaluate_batch(batch)
        except Exception:
            logger.exception("evaluating push actions for %d events failed", len(batch))
            # A retry of a failed commit: what an earlier try remembered is not written.
            for persisted in batch:
                self._written.pop(persisted.pdu.event_id)
            return None
        for push in writes.pushes:
            self._pending_pushes.put(push.event.pdu.event_id, push)
        self._remember_written(batch, writes)
        if not (writes.notifications or writes.exceptions or writes.read):
            return None
        read = [ReadUpTo(u, r, p, t) for (u, r, t), p in writes.read.items()]

        async def write(txn: Connection) -> None:
            await self._store.write(txn, writes.notifications, writes.exceptions, read)

        return write

    def _remember_written(self, batch: Sequence[EventToPersist], writes: _Writes) -> None:
        """Keep what each event's rows count (``counted``)."""
        written = {
            p.pdu.event_id: _Written(thread=writes.threads.get(p.pdu.event_id, MAIN_THREAD))
            for p in batch
            if p.stream_ordering > 0 and p.redacted_by is None
        }
        for row in writes.notifications:
            if (entry := written.get(row.event_id)) is not None:
                entry.room = (1, int(row.highlight))
        for exception in writes.exceptions:
            if (entry := written.get(exception.event_id)) is not None:
                entry.differences[exception.user_id] = (exception.notify, exception.highlight)
        for event_id, entry in written.items():
            self._written.put(event_id, entry)

    def counted(self, user_id: UserID, event_id: EventID) -> Counted | None:
        """What the rows written for the committed event ``event_id`` add to the unread
        counts of ``user_id`` once it is after their read position (before leaving out
        the senders they ignore); None when not known here. Read marks are not told:
        the caller handles the user's own events."""
        entry = self._written.get(event_id)
        if entry is None:
            return None
        notify, highlight = entry.room
        extra_notify, extra_highlight = entry.differences.get(user_id, (0, 0))
        return Counted(notify + extra_notify, highlight + extra_highlight, entry.thread)

    async def _evaluate_batch(self, batch: Sequence[EventToPersist]) -> _Writes:
        threads = await threads_of(
            self._relations,
            ((p.pdu.event_id, _relation(p)) for p in batch if p.stream_ordering > 0),
        )
        writes = _Writes([], [], {}, [], threads)
        for persisted in batch:
            pdu = persisted.pdu
            room_id, position = pdu.room_id, persisted.stream_ordering
            if position <= 0:
                continue  # backfilled history
            # "Marking notifications as read": sending an event reads up to it, in its
            # thread ("Threaded read receipts"); joining reads the whole room.
            if self._is_local(pdu.sender):
                read_thread = "" if pdu.type == "m.room.member" else threads[pdu.event_id]
                writes.read[(pdu.sender, room_id, read_thread)] = position
            # Notifications of a room the user left are dropped, not kept for a rejoin.
            if (
                pdu.type == "m.room.member"
                and pdu.membership in _LEFT
                and pdu.state_key
                and pdu.state_key != pdu.sender
                and self._is_local(pdu.state_key)
            ):
                writes.read[(UserID(pdu.state_key), room_id, "")] = position
            snapshot = await self._state.get_room(room_id)
            if snapshot is not None:
                evaluation = self._evaluate(
                    persisted, snapshot, await self._context(snapshot), writes
                )
                await self._add_invite_push(persisted, evaluation, writes)
        return writes

    async def _add_invite_push(
        self, persisted: EventToPersist, evaluation: EventEvaluation, writes: _Writes
    ) -> None:
        """An invite of a local user with pushers (not a member, so not among those
        evaluated above) is evaluated with their rules (``.m.rule.invite_for_me``)."""
        invited = await self._invite_actions(persisted.pdu, evaluation)
        if invited is None:
            return
        user_id, actions = invited
        if writes.pushes and writes.pushes[-1].event is persisted:
            writes.pushes[-1].actions[user_id] = actions
        else:
            writes.pushes.append(PushOutcome(persisted, {user_id: actions}))

    async def remote_invite_actions(self, pdu: Pdu) -> tuple[UserID, Actions] | None:
        """An invite of a local user from another server to a room this server is not in
        (kept apart, not written through the event pipeline), evaluated as a local
        invite is: the invitee with pushers and the actions if it notifies. The room is
        unknown here: no joined members, the sender at the default power level."""
        return await self._invite_actions(pdu, EventEvaluation(client_event(pdu), member_count=0))

    async def _invite_actions(
        self, pdu: Pdu, evaluation: EventEvaluation
    ) -> tuple[UserID, Actions] | None:
        """The invitee of ``pdu`` if it is an invite of a local user with pushers whom
        their rules notify of it, with the actions."""
        invitee = pdu.state_key
        if (
            pdu.type != "m.room.member"
            or pdu.membership != "invite"
            or not invitee
            or UserID(invitee) not in self._pushed_users()
        ):
            return None
        user_id = UserID(invitee)
        rulesets = await self._rulesets.get_rulesets([user_id])
        actions = evaluation.actions_for(rulesets[user_id].compiled, user_id, None)
        return (user_id, actions) if actions.notify else None

    def _evaluate(
        self,
        persisted: EventToPersist,
        snapshot: RoomSnapshot,
        context: _RoomContext,
        writes: _Writes,
    ) -> EventEvaluation:
        """Add the room outcome of ``persisted`` and each member's exception to it."""
        pdu = persisted.pdu
        sender = pdu.sender
        evaluation = _evaluation(pdu, snapshot, context)
        thread_id = writes.threads[pdu.event_id]
        room = evaluation.actions_for(_DEFAULT_RULES, _NOBODY, None)
        if room.notify:
            writes.notifications.append(
                RoomNotification(
                    pdu.room_id,
                    persisted.stream_ordering,
                    pdu.event_id,
                    sender,
                    thread_id,
                    room.highlight,
                )
            )
        names = context.display_names

        def differs(user_id: UserID, actions: Actions) -> None:
            notify = int(actions.notify) - int(room.notify)
            highlight = int(actions.highlight) - int(room.highlight)
            if (notify or highlight) and user_id != sender:
                writes.exceptions.append(
                    UserException(
                        user_id,
                        pdu.room_id,
                        persisted.stream_ordering,
                        pdu.event_id,
                        sender,
                        thread_id,
                        notify,
                        highlight,
                    )
                )

        for compiled, members in context.groups.items():
            uniform = evaluation.uniform_actions(compiled)
            if uniform is not None:
                if _same_counts(uniform, room):
                    continue
                for user_id in members:
                    differs(user_id, uniform)
            else:
                for user_id in members:
                    differs(user_id, evaluation.actions_for(compiled, user_id, names.get(user_id)))
        pushed = self._pushed_users()
        if pushed:
            self._add_pushes(persisted, evaluation, context, pushed, writes)
        return evaluation

    def _add_pushes(
        self,
        persisted: EventToPersist,
        evaluation: EventEvaluation,
        context: _RoomContext,
        pushed: Set[UserID],
        writes: _Writes,
    ) -> None:
        """Keep the actions of the members with pushers whom the event notifies."""
        members = context.ruleset_of
        if len(pushed) < len(members):
            targets = [u for u in pushed if u in members]
        else:
            targets = [u for u in members if u in pushed]
        notified: dict[UserID, Actions] = {}
        for user_id in targets:
            if user_id == persisted.pdu.sender:
                continue
            compiled = members[user_id]
            actions = evaluation.uniform_actions(compiled)
            if actions is None:
                actions = evaluation.actions_for(
                    compiled, user_id, context.display_names.get(user_id)
                )
            if actions.notify:
                notified[user_id] = actions
        if notified:
            writes.pushes.append(PushOutcome(persisted, notified))

    def take_pushes(self, events: Sequence[EventToPersist]) -> list[PushOutcome]:
        """The pushes of ``events`` (just committed), each handed out once."""
        pushes = []
        for persisted in events:
            event_id = persisted.pdu.event_id
            push = self._pending_pushes.peek(event_id)
            if push is not None:
                self._pending_pushes.pop(event_id)
                pushes.append(push)
        return pushes

    async def _context(self, snapshot: RoomSnapshot) -> _RoomContext:
        """The room's evaluation context: built once per loaded room, then brought up to
        date with the membership changes since (their rulesets and member events read
        for those members only), a changed create or power-levels event, and a change
        of anyone's push rules (which regroups the members)."""
        cached = self._contexts.get(snapshot.room_id)
        if cached is None or cached.snapshot is not snapshot:
            return await self._build(snapshot)
        changed = snapshot.changed_since(cached.membership_seq)
        if changed is None:
            return await self._build(snapshot)
        version = self._rulesets.version
        auth_ids = _auth_ids(snapshot)
        if not changed and auth_ids == cached.auth_ids and version == cached.rules_version:
            return cached
        seq, start_seq = snapshot.membership_seq, cached.membership_seq
        local = [u for u in dict.fromkeys(changed) if self._is_local(u)]
        joined = [u for u in local if snapshot.is_joined(u)]
        keys: list[StateKey] = [("m.room.member", u) for u in joined]
        if auth_ids != cached.auth_ids:
            keys += [CREATE_KEY, POWER_LEVELS_KEY]
        events = await self._state.get_state_events(snapshot.state, keys)
        if version != cached.rules_version:  # someone's push rules changed: regroup
            gone = set(local)
            kept = [u for u in cached.ruleset_of if u not in gone]
            regrouped = await self._group([*kept, *joined])
            if cached.membership_seq != start_seq:  # brought up to date meanwhile
                return cached
            cached.groups, cached.ruleset_of = regrouped
            cached.rules_version = version
        else:
            rulesets = await self._rulesets.get_rulesets(joined) if joined else {}
            if cached.membership_seq != start_seq:
                return cached
            for user_id in local:
                cached.remove(user_id)
            for user_id in joined:
                cached.add(user_id, rulesets[user_id].compiled)
        for user_id in local:
            cached.display_names.pop(user_id, None)
        cached.display_names.update(_display_names(joined, events))
        if auth_ids != cached.auth_ids:
            cached.auth_ids = auth_ids
            cached.auth_state, cached.notification_levels = _auth_state(events)
        cached.member_count = snapshot.joined_count()
        cached.membership_seq = seq
        return cached

    async def _build(self, snapshot: RoomSnapshot) -> _RoomContext:
        """The room's evaluation context read in full (rulesets in bulk)."""
        version = self._rulesets.version
        seq = snapshot.membership_seq
        auth_ids = _auth_ids(snapshot)
        local = snapshot.joined_on(self._server_name)
        keys: list[StateKey] = [CREATE_KEY, POWER_LEVELS_KEY]
        keys.extend(("m.room.member", u) for u in local)
        events = await self._state.get_state_events(snapshot.state, keys)
        groups, ruleset_of = await self._group(local)
        auth_state, levels = _auth_state(events)
        context = _RoomContext(
            snapshot=snapshot,
            membership_seq=seq,
            rules_version=version,
            auth_ids=auth_ids,
            member_count=snapshot.joined_count(),
            groups=groups,
            ruleset_of=ruleset_of,
            display_names=_display_names(local, events),
            auth_state=auth_state,
            notification_levels=levels,
        )
        # A rules change while they were read leaves the context out of date: not kept.
        if version == self._rulesets.version:
            self._contexts.put(snapshot.room_id, context)
        return context

    async def _group(
        self, members: Sequence[UserID]
    ) -> tuple[dict[CompiledRuleset, dict[UserID, None]], dict[UserID, CompiledRuleset]]:
        """``members`` grouped by compiled ruleset (read in bulk when not cached), and
        each member's ruleset."""
        rulesets = await self._rulesets.get_rulesets(members)
        groups: dict[CompiledRuleset, dict[UserID, None]] = {}
        ruleset_of: dict[UserID, CompiledRuleset] = {}
        for user_id in members:
            compiled = rulesets[user_id].compiled
            groups.setdefault(compiled, {})[user_id] = None
            ruleset_of[user_id] = compiled
        return groups, ruleset_of

    async def actions_now(self, user_id: UserID, pdu: Pdu) -> Actions | None:
        """The actions of ``pdu`` for ``user_id`` evaluated again with the room's current
        members and the user's current rules (a pusher catching up after a restart:
        the rows keep only whether an event notified and highlighted); None if the user
        is no longer a joined member."""
        snapshot = await self._state.get_room(pdu.room_id)
        if snapshot is None:
            return None
        context = await self._context(snapshot)
        compiled = context.ruleset_of.get(user_id)
        if compiled is None:
            return None
        return _evaluation(pdu, snapshot, context).actions_for(
            compiled, user_id, context.display_names.get(user_id)
        )

    def _is_local(self, user_id: str) -> bool:
        return server_name_of(UserID(user_id)) == self._server_name

    # -- read time ----------------------------------------------------------------------

    async def unread_counts(
        self, user_id: UserID, room_ids: Sequence[RoomID], at: int | None = None
    ) -> dict[RoomID, JsonDict]:
        """/sync's ``unread_notifications`` for each room with unread notifications:
        the user's notifications after their read receipt (the later of ``m.read`` and
        ``m.read.private``) or their own latest event in the room, whichever is later,
        leaving out events of users they ignore; and how many of those highlight.
        Events after stream position ``at`` are not counted (None: every event is).

        "Threaded read receipts": an unthreaded receipt reads every thread up to its
        event, a ``main`` one the main timeline only, one in a thread that thread only.
        """
        read, ignored = await self._read_positions(user_id, room_ids)
        counts = await self._store.get_unread_counts(user_id, read, ignored, at)
        return {room_id: _counts_json(count) for room_id, count in counts.items()}

    async def unread_sections(
        self, user_id: UserID, room_ids: Sequence[RoomID], per_thread: bool, at: int | None
    ) -> dict[RoomID, JsonDict]:
        """The unread counts of each room with any, as fields of its /sync room section:
        ``unread_notifications`` (``unread_counts``); with ``per_thread`` (the filter's
        ``unread_thread_notifications``) it counts the main timeline only and
        ``unread_thread_notifications`` has each thread's counts by thread root, for
        the threads with any (sync.yaml). Events after stream position ``at`` are not
        counted (None: every event is)."""
        if not per_thread:
            counts = await self.unread_counts(user_id, room_ids, at)
            return {room_id: {"unread_notifications": c} for room_id, c in counts.items()}
        read, ignored = await self._read_positions(user_id, room_ids)
        split = await self._store.get_unread_counts_by_thread(user_id, read, ignored, at)
        sections: dict[RoomID, JsonDict] = {}
        for room_id, room in split.items():
            section: JsonDict = {"unread_notifications": _counts_json(room.main)}
            if room.threads:
                section["unread_thread_notifications"] = {
                    thread_id: _counts_json(count) for thread_id, count in room.threads.items()
                }
            sections[room_id] = section
        return sections

    async def _read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> tuple[dict[RoomID, int], frozenset[UserID]]:
        """Each room's unthreaded receipt position (0: none) and whom the user ignores."""
        positions = await self._receipts.read_positions(user_id, room_ids)
        read = {room_id: positions.get(room_id, 0) for room_id in room_ids}
        return read, await self._ignored_users(user_id)


def _evaluation(pdu: Pdu, snapshot: RoomSnapshot, context: _RoomContext) -> EventEvaluation:
    """``pdu`` ready to be evaluated for the room's members."""
    return EventEvaluation(
        client_event(pdu),
        member_count=context.member_count,
        sender_power_level=get_user_power_level(
            pdu.sender, context.auth_state, snapshot.room_version
        ),
        notification_power_levels=context.notification_levels,
    )


def _relation(persisted: EventToPersist) -> StoredRelation:
    """The relation of ``persisted`` as its row will store it (none once redacted)."""
    room_id = persisted.pdu.room_id
    if persisted.redacted_by is not None or persisted.rel_type is None:
        return StoredRelation(room_id)
    return StoredRelation(room_id, persisted.rel_type, persisted.relates_to)


def _counts_json(count: UnreadCount) -> JsonDict:
    return {
        "notification_count": max(0, count.notifications),
        "highlight_count": max(0, count.highlights),
    }


def _same_counts(a: Actions, b: Actions) -> bool:
    """Whether two outcomes count the same (notify and highlight)."""
    return a.notify == b.notify and a.highlight == b.highlight


def _auth_ids(snapshot: RoomSnapshot) -> tuple[EventID | None, EventID | None]:
    return snapshot.state.get(CREATE_KEY), snapshot.state.get(POWER_LEVELS_KEY)


def _auth_state(events: Mapping[StateKey, Pdu]) -> tuple[dict[StateKey, Pdu], Mapping[str, int]]:
    """The create and power-levels events among ``events``, and the notification levels."""
    power_levels = events.get(POWER_LEVELS_KEY)
    return (
        {k: events[k] for k in (CREATE_KEY, POWER_LEVELS_KEY) if k in events},
        notification_levels(power_levels.content if power_levels is not None else None),
    )


def _display_names(members: Sequence[UserID], events: Mapping[StateKey, Pdu]) -> dict[UserID, str]:
    """Each member's ``displayname`` from their m.room.member event, if it is a string."""
    names: dict[UserID, str] = {}
    for user_id in members:
        member = events.get(("m.room.member", user_id))
        name: Any = member.content.get("displayname") if member is not None else None
        if isinstance(name, str) and name:
            names[user_id] = name
    return names
