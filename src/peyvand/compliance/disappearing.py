"""Disappearing messages (docs/compliance.md, "Disappearing messages").

A room admin (whoever may send the state event: by default power level 50) sets the
room's timer with the state event ``io.peyvand.disappearing``, content
``{"timer_ms": 30000}``; an empty content (or no ``timer_ms``) turns it off. Like
Signal's and WhatsApp's timers it applies to messages sent after it is set: each
non-state event gets an expiry (``origin_server_ts``, or its arrival if that is
earlier, + the timer in the room's state at the event, clamped to
``[min_timer, max_timer]``), written in the event's own commit. Every
``check_interval`` seconds the expired events are purged (``HistoryPurger.purge``)
with the media no other event names. Events a legal hold covers are kept and looked at
again a day later (so they go once the hold is released).

A local client's timer event is checked before it is sent (``check_client_event``): a
state event with an empty state key whose ``timer_ms``, if present, is an integer in the
configured range (Synapse checks ``m.room.retention`` the same way, ``M_BAD_JSON``).
Other servers' timer events are not refused: ``timer_of`` clamps what they set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from peyvand.background import BackgroundTask
from peyvand.compliance.purge import HistoryPurger, PurgeCount
from peyvand.config.model import DisappearingConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu
from peyvand.lru import LRU
from peyvand.services.timeline.event_creation import EventSpec
from peyvand.services.timeline.event_writer import TxnWrite
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.database import Connection
from peyvand.storage.models import EventToPersist
from peyvand.storage.purge import PurgeStore
from peyvand.types import EventID, JsonDict, RoomID

__all__ = ["DISAPPEARING_EVENT", "DisappearingMessages"]

logger = logging.getLogger(__name__)

DISAPPEARING_EVENT = "io.peyvand.disappearing"
_KEY = (DISAPPEARING_EVENT, "")
_TIMER_CACHE_SIZE = 10_000
_BATCH = 500
_HELD_RECHECK_MS = 24 * 3600 * 1000


class DisappearingMessages:
    def __init__(
        self,
        config: DisappearingConfig,
        store: PurgeStore,
        state: StateService,
        purger: HistoryPurger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._state = state
        self._purger = purger
        self._clock = clock
        # The timer each timer event sets, and when it was sent (state events are
        # immutable).
        self._timers: LRU[EventID, tuple[int | None, int]] = LRU(_TIMER_CACHE_SIZE)
        self._task = BackgroundTask("disappearing-messages", self._loop)

    def timer_of(self, content: JsonDict) -> int | None:
        """The timer (milliseconds) a timer event's content sets, clamped to the
        configured range; None: no timer."""
        value = content.get("timer_ms")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return None
        return min(max(value, self._config.min_timer), self._config.max_timer)

    def check_client_event(self, spec: EventSpec) -> None:
        """Refuse a timer event a local client sends that is malformed or outside
        ``[min_timer, max_timer]``; other events pass. ``{}`` (no ``timer_ms``) turns
        the timer off."""
        if spec.event_type != DISAPPEARING_EVENT:
            return
        if spec.state_key != "":
            raise MatrixError(
                Errcode.INVALID_PARAM,
                f"{DISAPPEARING_EVENT} must be a state event with an empty state key",
            )
        if "timer_ms" not in spec.content:
            return
        value = spec.content["timer_ms"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise MatrixError(Errcode.BAD_JSON, "'timer_ms' must be an integer (milliseconds)")
        low, high = self._config.min_timer, self._config.max_timer
        if not low <= value <= high:
            raise MatrixError(
                Errcode.BAD_JSON, f"'timer_ms' must be between {low} and {high} milliseconds"
            )

    async def room_timer(self, room_id: RoomID) -> int | None:
        """The room's current timer (None: none, or the feature is off here)."""
        snapshot = await self._state.get_room(room_id)
        if snapshot is None or not self._config.enabled:
            return None
        return (await self._timer_set(snapshot.state.get(_KEY), {}))[0]

    async def _timer_set(
        self, event_id: EventID | None, in_batch: Mapping[EventID, Pdu]
    ) -> tuple[int | None, int]:
        """The timer the timer event ``event_id`` sets (None: none) and its
        ``origin_server_ts``; ``in_batch``: events being committed with the caller's."""
        if event_id is None:
            return None, 0
        pdu = in_batch.get(event_id)
        if pdu is not None:
            return self.timer_of(dict(pdu.content)), pdu.origin_server_ts
        if await self._state.is_redacted(event_id):
            return None, 0
        known = self._timers.get(event_id)
        if known is None:
            stored = (await self._state.get_pdus([event_id])).get(event_id)
            known = (
                (None, 0)
                if stored is None
                else (self.timer_of(dict(stored.content)), stored.origin_server_ts)
            )
            self._timers.put(event_id, known)
        return known

    async def prepare(self, batch: Sequence[EventToPersist]) -> TxnWrite | None:
        """The ``EventWriter`` pre-commit hook: the expiry of each new message in a room
        with a timer, written in the same commit. The timer is the one in the room's
        state at the event (its state group: a timer changed later in the same batch, or
        on another branch of the room's graph, does not count). The clock starts at the
        event's ``origin_server_ts``, or at its arrival if that claims a later time (a
        server cannot keep its users' messages past the room's timer). Errors are raised:
        committing the messages without their expiries would keep them for good."""
        if not self._config.enabled:
            return None
        in_batch = {e.pdu.event_id: e.pdu for e in batch}
        now = int(self._clock() * 1000)
        rows: list[tuple[EventID, str, int]] = []
        for persisted in batch:
            pdu = persisted.pdu
            if pdu.is_state():
                continue
            at_event = await self._state.state_ids_at_group(persisted.state_group, [_KEY])
            timer, set_ts = await self._timer_set(at_event.get(_KEY), in_batch)
            # History fetched from other servers (backfill: a negative stream position)
            # may predate the timer: only what was sent since it counts.
            if persisted.stream_ordering < 0 and pdu.origin_server_ts < set_ts:
                continue
            if timer is not None:
                start = min(pdu.origin_server_ts, now)
                rows.append((pdu.event_id, pdu.room_id, start + timer))
        if not rows:
            return None

        async def write(txn: Connection) -> None:
            await self._store.set_expiry(txn, rows)

        return write

    async def purge_expired(self, now_ms: int | None = None) -> PurgeCount:
        """Purge every message whose timer ran out by ``now_ms`` (default: now)."""
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        total = PurgeCount()
        while True:
            candidates, gone = await self._store.expired_disappearing(now, _BATCH)
            await self._store.drop_expiry(gone)
            if not candidates:
                return total
            count = await self._purger.purge(candidates, "disappearing")
            total.add(count)
            # Whatever is left (held, or state) is looked at again later, not every tick.
            await self._store.postpone_expiry(
                [c.event_id for c in candidates], now + _HELD_RECHECK_MS
            )
            if len(candidates) < _BATCH:
                return total
            await asyncio.sleep(0)

    # -- background ----------------------------------------------------------------------

    async def start(self) -> None:
        """Remove expired messages in the background (when enabled)."""
        if self._config.enabled:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        while True:
            delay = float(self._config.check_interval)
            try:
                count = await self.purge_expired()
                if count.events:
                    await self._store.release_space()
                    logger.info("%d disappearing messages removed", count.events)
                next_ts = await self._store.next_expiry()
                if next_ts is not None:
                    delay = min(delay, max(0.5, next_ts / 1000 - self._clock()))
            except Exception:
                # Retried at the normal pace, not in a tight loop on the same batch.
                logger.exception("removing disappearing messages failed; retrying")
            await asyncio.sleep(delay)
