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
  ruleset (``_RoomContext``, kept with the room's state group and regrouped whenever any
  local user's push rules change; rulesets read in bulk on a cold cache); a group whose
  rules nothing in the event can tell apart (``EventEvaluation.uniform_actions``: no
  mention, invite or display-name test left) is decided at once, so the default-rules
  members of a room cost nothing each for an ordinary message, and each member of a
  group that has such tests left costs O(1) set or string look-ups;
- a read mark for a local sender (sending an event reads up to it, and so does joining:
  a join is the user's own event) and for a local member kicked or banned.

Backfilled history (positions below zero) never notifies. Only joined members are
evaluated: counts exist for joined rooms only, so an invite's ``.m.rule.invite_for_me``
stores nothing.

Read time. The unread count of user U in room R counts the room rows and U's exceptions
after the later of U's read receipt (``m.read`` or ``m.read.private``) and U's read
mark: a few index look-ups per room, however many events are unread. Events from users
U ignores (``m.ignored_user_list``) are taken out then, from the rows' senders, so
ignoring (or no longer ignoring) someone changes the counts at once. Exceptions at or
before a receipt are deleted later, in bounded batches, by a background task; room rows
live as long as their events (purging an event deletes its rows).

Ordering. Running counts need each room's rows inserted in stream order: positions are
allocated under the room's lock, enqueued in that order, and the one ``EventWriter``
commits its queue in order (a failed batch is retried in parts, rooms kept whole, and
the inserts compute the counts from the rows before them, so a retry writes the same).
Several writers (issue 21) would have to keep that per room: each room's events
persisted by one writer (rooms sharded between writers), or the counts computed at
read time from a position every writer has passed.

Listing notifications (issue 17, GET /notifications). A user's notifying events in a
room are the room rows within the user's joined ranges (from their membership events;
exceptions are only written for joined members), less the user's own events, those of
users they ignore and their exceptions with ``notify = -1``, plus their exceptions with
``notify = 1``; highlight likewise. A room row carries its event ID, sender and thread,
so the listing is a merge of two index range scans per room, and the actions themselves
(sound, tweaks) can be evaluated again for the listed events only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from peyvand.background import BackgroundTask
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
from peyvand.types import JsonDict, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

# Rooms whose evaluation context is kept (one per room, rebuilt on each state change).
_CONTEXT_CACHE_SIZE: Final = 10_000
# (user, room) read positions remembered as already cleaned up.
_CLEANED_CACHE_SIZE: Final = 100_000
# (user, room) pairs cleaned up per transaction.
_CLEANUP_BATCH: Final = 500
# "Threaded read receipts": the thread ID of the main timeline.
MAIN_THREAD: Final = "main"
_LEFT: Final = frozenset({"leave", "ban"})
# Whom the room outcome is evaluated for: no event can name it (no string accepted from
# a client or another server holds U+0000), so no per-user rule matches it.
_NOBODY: Final = UserID("\x00nobody")
# The compiled default rules, shared by every user without rules of their own.
_DEFAULT_RULES: Final = Ruleset(_NOBODY).compiled

IgnoredUsers = Callable[[UserID], Awaitable[frozenset[UserID]]]


class ReadPositions(Protocol):
    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, int]: ...


class Rulesets(Protocol):
    @property
    def version(self) -> int: ...

    async def get_rulesets(self, user_ids: Iterable[str]) -> Mapping[str, Ruleset]: ...


@dataclass(frozen=True, slots=True)
class _RoomContext:
    """What evaluating an event needs from one room state (one state group) and the
    local members' push rules at one ``Rulesets.version``."""

    state_group: int
    rules_version: int
    member_count: int
    # The local joined members grouped by compiled ruleset.
    groups: tuple[tuple[CompiledRuleset, tuple[UserID, ...]], ...]
    display_names: Mapping[UserID, str]
    auth_state: Mapping[StateKey, Pdu]
    notification_levels: Mapping[str, int]


@dataclass(slots=True)
class _Writes:
    """What one batch writes."""

    notifications: list[RoomNotification]
    exceptions: list[UserException]
    # (user, room) -> read up to; one entry per pair however many events it sent.
    read: dict[tuple[UserID, RoomID], int]


class PushActionsService:
    def __init__(
        self,
        server_name: ServerName,
        store: PushActionStore,
        state: StateService,
        rulesets: Rulesets,
        receipts: ReadPositions,
        ignored_users: IgnoredUsers,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._state = state
        self._rulesets = rulesets
        self._receipts = receipts
        self._ignored_users = ignored_users
        self._contexts: LRU[RoomID, _RoomContext] = LRU(_CONTEXT_CACHE_SIZE)
        self._cleaned: LRU[tuple[UserID, RoomID], int] = LRU(_CLEANED_CACHE_SIZE)
        self._to_clean: dict[tuple[UserID, RoomID], int] = {}
        self._wakeup = asyncio.Event()
        self._cleanup = BackgroundTask("push-actions-cleanup", self._clean_up_forever)

    def start(self) -> None:
        self._cleanup.start()

    async def stop(self) -> None:
        await self._cleanup.stop()

    # -- write time -------------------------------------------------------------------

    async def prepare(self, batch: Sequence[EventToPersist]) -> TxnWrite | None:
        """The ``EventWriter`` pre-commit hook: evaluate ``batch`` and return the write
        for its transaction. Evaluation errors are logged, never raised: they must not
        fail the events themselves."""
        try:
            writes = await self._evaluate_batch(batch)
        except Exception:
            logger.exception("evaluating push actions for %d events failed", len(batch))
            return None
        if not (writes.notifications or writes.exceptions or writes.read):
            return None
        read = [ReadUpTo(u, r, p) for (u, r), p in writes.read.items()]

        async def write(txn: Connection) -> None:
            await self._store.write(txn, writes.notifications, writes.exceptions, read)

        return write

    async def _evaluate_batch(self, batch: Sequence[EventToPersist]) -> _Writes:
        writes = _Writes([], [], {})
        for persisted in batch:
            pdu = persisted.pdu
            room_id, position = pdu.room_id, persisted.stream_ordering
            if position <= 0:
                continue  # backfilled history
            # "Marking notifications as read": sending an event reads up to it.
            if self._is_local(pdu.sender):
                writes.read[(pdu.sender, room_id)] = position
            # Notifications of a room the user left are dropped, not kept for a rejoin.
            if (
                pdu.type == "m.room.member"
                and pdu.membership in _LEFT
                and pdu.state_key
                and pdu.state_key != pdu.sender
                and self._is_local(pdu.state_key)
            ):
                writes.read[(UserID(pdu.state_key), room_id)] = position
            snapshot = await self._state.get_room(room_id)
            if snapshot is not None:
                self._evaluate(persisted, snapshot, await self._context(snapshot), writes)
        return writes

    def _evaluate(
        self,
        persisted: EventToPersist,
        snapshot: RoomSnapshot,
        context: _RoomContext,
        writes: _Writes,
    ) -> None:
        """Add the room outcome of ``persisted`` and each member's exception to it."""
        pdu = persisted.pdu
        sender = pdu.sender
        evaluation = EventEvaluation(
            client_event(pdu),
            member_count=context.member_count,
            sender_power_level=get_user_power_level(
                sender, context.auth_state, snapshot.room_version
            ),
            notification_power_levels=context.notification_levels,
        )
        thread_id = (
            persisted.relates_to
            if persisted.rel_type == "m.thread" and persisted.relates_to is not None
            else MAIN_THREAD
        )
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

        for compiled, members in context.groups:
            uniform = evaluation.uniform_actions(compiled)
            if uniform is not None:
                if _same_counts(uniform, room):
                    continue
                for user_id in members:
                    differs(user_id, uniform)
            else:
                for user_id in members:
                    differs(user_id, evaluation.actions_for(compiled, user_id, names.get(user_id)))

    async def _context(self, snapshot: RoomSnapshot) -> _RoomContext:
        """The room's evaluation context, cached until its state or any local user's
        push rules change."""
        group, version = snapshot.state_group.state_group, self._rulesets.version
        cached = self._contexts.get(snapshot.room_id)
        if cached is not None and cached.state_group == group:
            if cached.rules_version == version:
                return cached
            # Someone's push rules changed: the same members, grouped again.
            members = [u for _, users in cached.groups for u in users]
            context = replace(cached, rules_version=version, groups=await self._group(members))
            return self._keep(snapshot.room_id, context, version)
        joined = snapshot.joined_members()
        local = tuple(u for u in joined if self._is_local(u))
        keys: list[StateKey] = [CREATE_KEY, POWER_LEVELS_KEY]
        keys.extend(("m.room.member", u) for u in local)
        events = await self._state.get_state_events(snapshot.state, keys)
        power_levels = events.get(POWER_LEVELS_KEY)
        context = _RoomContext(
            state_group=group,
            rules_version=version,
            member_count=len(joined),
            groups=await self._group(local),
            display_names=_display_names(local, events),
            auth_state={k: events[k] for k in (CREATE_KEY, POWER_LEVELS_KEY) if k in events},
            notification_levels=notification_levels(
                power_levels.content if power_levels is not None else None
            ),
        )
        return self._keep(snapshot.room_id, context, version)

    async def _group(
        self, members: Sequence[UserID]
    ) -> tuple[tuple[CompiledRuleset, tuple[UserID, ...]], ...]:
        """``members`` grouped by compiled ruleset (read in bulk when not cached)."""
        rulesets = await self._rulesets.get_rulesets(members)
        groups: dict[CompiledRuleset, list[UserID]] = {}
        for user_id in members:
            groups.setdefault(rulesets[user_id].compiled, []).append(user_id)
        return tuple((compiled, tuple(users)) for compiled, users in groups.items())

    def _keep(self, room_id: RoomID, context: _RoomContext, version: int) -> _RoomContext:
        """Cache ``context`` unless a rules change while it was read left it out of date."""
        if version == self._rulesets.version:
            self._contexts.put(room_id, context)
        return context

    def _is_local(self, user_id: str) -> bool:
        return server_name_of(UserID(user_id)) == self._server_name

    # -- read time ----------------------------------------------------------------------

    async def unread_counts(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, JsonDict]:
        """/sync's ``unread_notifications`` for each room with unread notifications:
        the user's notifications after their read receipt (the later of ``m.read`` and
        ``m.read.private``) or their own latest event in the room, whichever is later,
        leaving out events of users they ignore; and how many of those highlight."""
        positions = await self._receipts.read_positions(user_id, room_ids)
        counts = await self._store.get_unread_counts(
            user_id,
            {room_id: positions.get(room_id, 0) for room_id in room_ids},
            await self._ignored_users(user_id),
        )
        self._schedule_cleanup(user_id, positions)
        return {
            room_id: {"notification_count": c.notifications, "highlight_count": c.highlights}
            for room_id, c in counts.items()
        }

    # -- clean-up -----------------------------------------------------------------------

    def _schedule_cleanup(self, user_id: UserID, positions: Mapping[RoomID, int]) -> None:
        """Queue the deletion of exceptions a receipt covers where the read position moved
        since the last clean-up this process remembers, so an unchanged receipt costs no
        write."""
        for room_id, position in positions.items():
            key = (user_id, room_id)
            cleaned = self._cleaned.peek(key)
            if cleaned is not None and cleaned >= position:
                continue
            if self._to_clean.get(key, -1) >= position:
                continue
            self._to_clean[key] = position
            self._wakeup.set()

    async def _clean_up_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._to_clean:
                batch = list(self._to_clean.items())[:_CLEANUP_BATCH]
                for key, _ in batch:
                    del self._to_clean[key]
                try:
                    await self._store.delete_read([ReadUpTo(u, r, p) for (u, r), p in batch])
                except Exception:
                    logger.exception("deleting %d read push action ranges failed", len(batch))
                    continue
                for key, position in batch:
                    self._cleaned.put(key, position)
                # Let requests run between batches.
                await asyncio.sleep(0)


def _same_counts(a: Actions, b: Actions) -> bool:
    """Whether two outcomes count the same (notify and highlight)."""
    return a.notify == b.notify and a.highlight == b.highlight


def _display_names(members: Sequence[UserID], events: Mapping[StateKey, Pdu]) -> dict[UserID, str]:
    """Each member's ``displayname`` from their m.room.member event, if it is a string."""
    names: dict[UserID, str] = {}
    for user_id in members:
        member = events.get(("m.room.member", user_id))
        name: Any = member.content.get("displayname") if member is not None else None
        if isinstance(name, str) and name:
            names[user_id] = name
    return names
