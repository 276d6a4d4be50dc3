"""Disappearing messages (docs/compliance.md, "Disappearing messages").

A room admin (whoever may send the state event: by default power level 50) sets the
room's timer with the state event ``io.peyvand.disappearing``, content
``{"timer_ms": 30000}``; an empty content (or no ``timer_ms``) turns it off. Like
Signal's and WhatsApp's timers it applies to messages sent after it is set: each
non-state event gets an expiry (``origin_server_ts`` + timer, the timer clamped to
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
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from peyvand.config.model import DisappearingConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.services.event_creation import EventSpec
from peyvand.services.event_writer import TxnWrite
from peyvand.services.purge import HistoryPurger, PurgeCount
from peyvand.services.room_state import StateService
from peyvand.storage.database import Connection
from peyvand.storage.models import EventToPersist
from peyvand.storage.purge import PurgeStore
from peyvand.types import EventID, JsonDict, RoomID

__all__ = ["DISAPPEARING_EVENT", "DisappearingMessages"]

logger = logging.getLogger(__name__)

DISAPPEARING_EVENT = "io.peyvand.disappearing"
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
        self._timers: dict[EventID, tuple[int | None, int]] = {}
        self._task: asyncio.Task[None] | None = None

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
        return (await self._timer_set(room_id))[0]

    async def _timer_set(self, room_id: RoomID) -> tuple[int | None, int]:
        """The room's current timer (None: none) and the ``origin_server_ts`` of the
        event that set it."""
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            return None, 0
        event_id = snapshot.state.get((DISAPPEARING_EVENT, ""))
        if event_id is None or await self._state.is_redacted(event_id):
            return None, 0
        if event_id not in self._timers:
            pdu = (await self._state.get_pdus([event_id])).get(event_id)
            self._timers[event_id] = (
                (None, 0)
                if pdu is None
                else (self.timer_of(dict(pdu.content)), pdu.origin_server_ts)
            )
        return self._timers[event_id]

    async def prepare(self, batch: Sequence[EventToPersist]) -> TxnWrite | None:
        """The ``EventWriter`` pre-commit hook: the expiry of each new message in a room
        with a timer, written with it. Errors are logged, never raised."""
        if not self._config.enabled:
            return None
        rows: list[tuple[EventID, str, int]] = []
        try:
            for persisted in batch:
                pdu = persisted.pdu
                if pdu.is_state():
                    continue
                timer, set_ts = await self._timer_set(RoomID(pdu.room_id))
                # History fetched from other servers (backfill: a negative stream
                # position) may predate the timer: only what was sent since it counts.
                if persisted.stream_ordering < 0 and pdu.origin_server_ts < set_ts:
                    continue
                if timer is not None:
                    rows.append((pdu.event_id, pdu.room_id, pdu.origin_server_ts + timer))
        except Exception:
            logger.exception("working out message expiries for %d events failed", len(batch))
            return None
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

    def start(self) -> None:
        if self._config.enabled:
            self._task = asyncio.create_task(self._loop(), name="disappearing-messages")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                count = await self.purge_expired()
                if count.events:
                    await self._store.release_space()
                    logger.info("%d disappearing messages removed", count.events)
            except Exception:
                logger.exception("removing disappearing messages failed; retrying")
            next_ts = await self._store.next_expiry()
            delay = float(self._config.check_interval)
            if next_ts is not None:
                delay = min(delay, max(0.5, next_ts / 1000 - self._clock()))
            await asyncio.sleep(delay)
