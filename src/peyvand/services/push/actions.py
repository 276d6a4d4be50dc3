"""Unread notification counts (Client-Server API, "Push Notifications": "Receiving
notifications", "Marking notifications as read"; /sync's ``unread_notifications``).

Just before each group commit, ``prepare`` (an ``EventWriter`` pre-commit hook)
evaluates every new event against the push rules of each local joined member other than
its sender, all members at once (``events.push_rules.evaluation``: what depends only on
the event and the room is evaluated once per event, each member costs a cached ruleset
look-up and O(1) tests; no query once rulesets are cached); the rows, one per notifying
(user, event), are written in the events' own transaction, one statement per batch, so
they are exactly as durable as the events and share their fsync. The sync an event wakes
therefore already counts it. Only joined members are evaluated: counts exist for joined
rooms only, so an invite's ``.m.rule.invite_for_me`` stores nothing.

``unread_counts`` counts a user's rows after their read receipt in each room. Rows at or
before it are deleted later, in bounded batches, by a background task; a local user's own
event, and their leaving, mark their notifications up to it as read at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from peyvand.background import BackgroundTask
from peyvand.events.auth import get_user_power_level
from peyvand.events.auth.power_levels import CREATE_KEY, POWER_LEVELS_KEY
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.push_rules.conditions import notification_levels
from peyvand.events.push_rules.evaluation import EventEvaluation
from peyvand.events.push_rules.ruleset import Ruleset
from peyvand.events.serialize import client_event
from peyvand.lru import LRU
from peyvand.services.timeline.event_writer import TxnWrite
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.database import Connection
from peyvand.storage.models import EventToPersist
from peyvand.storage.push_actions import PushActionRow, PushActionStore, ReadUpTo
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


class ReadPositions(Protocol):
    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, int]: ...


class Rulesets(Protocol):
    async def get_ruleset(self, user_id: str) -> Ruleset: ...


@dataclass(frozen=True, slots=True)
class _RoomContext:
    """What evaluating an event needs from one room state (one state group)."""

    state_group: int
    local_members: tuple[UserID, ...]
    member_count: int
    display_names: Mapping[UserID, str]
    auth_state: Mapping[StateKey, Pdu]
    notification_levels: Mapping[str, int]


class PushActionsService:
    def __init__(
        self,
        server_name: ServerName,
        store: PushActionStore,
        state: StateService,
        rulesets: Rulesets,
        receipts: ReadPositions,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._state = state
        self._rulesets = rulesets
        self._receipts = receipts
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
            added, read = await self._evaluate_batch(batch)
        except Exception:
            logger.exception("evaluating push actions for %d events failed", len(batch))
            return None
        if not added and not read:
            return None

        async def write(txn: Connection) -> None:
            await self._store.write(txn, added, read)

        return write

    async def _evaluate_batch(
        self, batch: Sequence[EventToPersist]
    ) -> tuple[list[PushActionRow], list[ReadUpTo]]:
        added: list[PushActionRow] = []
        # (user, room) -> read up to; one entry per pair however many events it sent.
        read: dict[tuple[UserID, RoomID], int] = {}
        for persisted in batch:
            pdu = persisted.pdu
            room_id, position = pdu.room_id, persisted.stream_ordering
            # "Marking notifications as read": sending an event reads up to it.
            if self._is_local(pdu.sender):
                read[(pdu.sender, room_id)] = position
            # Notifications of a room the user left are dropped, not kept for a rejoin.
            if (
                pdu.type == "m.room.member"
                and pdu.membership in _LEFT
                and pdu.state_key
                and pdu.state_key != pdu.sender
                and self._is_local(pdu.state_key)
            ):
                read[(UserID(pdu.state_key), room_id)] = position
            snapshot = await self._state.get_room(room_id)
            if snapshot is None:
                continue
            context = await self._context(snapshot)
            sender, event_id = pdu.sender, pdu.event_id
            recipients = [u for u in context.local_members if u != sender]
            if not recipients:
                continue
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
            names, get_ruleset = context.display_names, self._rulesets.get_ruleset
            for user_id in recipients:
                ruleset = await get_ruleset(user_id)
                actions = evaluation.actions_for(ruleset.compiled, user_id, names.get(user_id))
                if actions.notify:
                    added.append(
                        PushActionRow(
                            user_id, room_id, position, event_id, actions.highlight, thread_id
                        )
                    )
        return added, [ReadUpTo(u, r, p) for (u, r), p in read.items()]

    async def _context(self, snapshot: RoomSnapshot) -> _RoomContext:
        """The room's evaluation context, cached until its state changes."""
        group = snapshot.state_group.state_group
        cached = self._contexts.get(snapshot.room_id)
        if cached is not None and cached.state_group == group:
            return cached
        joined = snapshot.joined_members()
        local = tuple(u for u in joined if self._is_local(u))
        keys: list[StateKey] = [CREATE_KEY, POWER_LEVELS_KEY]
        keys.extend(("m.room.member", u) for u in local)
        events = await self._state.get_state_events(snapshot.state, keys)
        power_levels = events.get(POWER_LEVELS_KEY)
        context = _RoomContext(
            state_group=group,
            local_members=local,
            member_count=len(joined),
            display_names=_display_names(local, events),
            auth_state={k: events[k] for k in (CREATE_KEY, POWER_LEVELS_KEY) if k in events},
            notification_levels=notification_levels(
                power_levels.content if power_levels is not None else None
            ),
        )
        self._contexts.put(snapshot.room_id, context)
        return context

    def _is_local(self, user_id: str) -> bool:
        return server_name_of(UserID(user_id)) == self._server_name

    # -- read time ----------------------------------------------------------------------

    async def unread_counts(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, JsonDict]:
        """/sync's ``unread_notifications`` for each room with unread notifications:
        the user's notifications after their read receipt (the later of ``m.read`` and
        ``m.read.private``), and how many of those highlight."""
        positions = await self._receipts.read_positions(user_id, room_ids)
        counts = await self._store.get_unread_counts(
            user_id, {room_id: positions.get(room_id, 0) for room_id in room_ids}
        )
        self._schedule_cleanup(user_id, positions)
        return {
            room_id: {"notification_count": c.notifications, "highlight_count": c.highlights}
            for room_id, c in counts.items()
        }

    # -- clean-up -----------------------------------------------------------------------

    def _schedule_cleanup(self, user_id: UserID, positions: Mapping[RoomID, int]) -> None:
        """Queue the deletion of read rows where the read position moved since the last
        clean-up this process remembers, so an unchanged receipt costs no write."""
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


def _display_names(members: Sequence[UserID], events: Mapping[StateKey, Pdu]) -> dict[UserID, str]:
    """Each member's ``displayname`` from their m.room.member event, if it is a string."""
    names: dict[UserID, str] = {}
    for user_id in members:
        member = events.get(("m.room.member", user_id))
        name: Any = member.content.get("displayname") if member is not None else None
        if isinstance(name, str) and name:
            names[user_id] = name
    return names
