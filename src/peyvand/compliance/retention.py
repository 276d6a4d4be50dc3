"""Retention: the background purge of expired history (docs/compliance.md, "Retention").

A room's policy is its ``m.room.retention`` state event (MSC1763, as Synapse reads it):
``max_lifetime`` in milliseconds, clamped to ``[allowed_lifetime_min,
allowed_lifetime_max]``; a room without one uses ``default_max_lifetime`` (unset: keep
forever). Every ``purge_interval`` seconds, each room's events older than its
max_lifetime are purged (``HistoryPurger.purge``) in batches of ``purge_batch_size``,
each its own transaction, yielding to request handling in between. The same run deletes
the stored original content of events redacted more than ``redacted_content_lifetime``
ago. Events in current state, and events a legal hold covers, are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peyvand.background import periodic
from peyvand.compliance.purge import HistoryPurger, PurgeCount
from peyvand.config.model import RetentionConfig
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.purge import PurgeStore
from peyvand.types import RoomID

__all__ = ["RetentionReport", "RetentionService"]

logger = logging.getLogger(__name__)

RETENTION_EVENT = "m.room.retention"


@dataclass(slots=True)
class RetentionReport:
    rooms: int = 0
    purged: PurgeCount = field(default_factory=PurgeCount)
    redacted_content: PurgeCount = field(default_factory=PurgeCount)


class RetentionService:
    def __init__(
        self,
        config: RetentionConfig,
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
        self._run_lock = asyncio.Lock()
        self._task = periodic("retention", config.purge_interval, self._purge)

    async def max_lifetime(self, room_id: RoomID) -> int | None:
        """The room's effective max_lifetime in milliseconds (None: kept forever)."""
        snapshot = await self._state.get_room(room_id)
        lifetime = self._config.default_max_lifetime
        if snapshot is not None:
            event_id = snapshot.state.get((RETENTION_EVENT, ""))
            # A redacted policy event sets no policy (as in Synapse).
            if event_id is not None and not await self._state.is_redacted(event_id):
                pdu = (await self._state.get_pdus([event_id])).get(event_id)
                value = pdu.content.get("max_lifetime") if pdu is not None else None
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    lifetime = value
        if lifetime is None:
            return None
        low, high = self._config.allowed_lifetime_min, self._config.allowed_lifetime_max
        if low is not None:
            lifetime = max(lifetime, low)
        if high is not None:
            lifetime = min(lifetime, high)
        return lifetime

    async def run(
        self, now_ms: int | None = None, room_id: RoomID | None = None
    ) -> RetentionReport:
        """One purge run as of ``now_ms`` (default: now), over every room or one. Runs
        one at a time."""
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        report = RetentionReport()
        async with self._run_lock:
            rooms = [room_id] if room_id is not None else await self._store.room_ids()
            for room in rooms:
                lifetime = await self.max_lifetime(RoomID(room))
                if lifetime is None:
                    continue
                report.rooms += 1
                report.purged.add(await self._purge_room(room, now - lifetime))
            if room_id is None and self._config.redacted_content_lifetime is not None:
                report.redacted_content = await self._purge_redacted(
                    now - self._config.redacted_content_lifetime
                )
            if report.purged.events or report.redacted_content.events:
                await self._store.release_space()
        return report

    async def _purge_room(self, room_id: str, before_ts: int) -> PurgeCount:
        total = PurgeCount()
        after: int | None = None
        while True:
            batch = await self._store.expired_in_room(
                room_id, before_ts, after, self._config.purge_batch_size
            )
            if not batch:
                break
            total.add(await self._purger.purge(batch, "retention"))
            after = batch[-1].stream_ordering
            await asyncio.sleep(0)
        # Events kept outside the timeline (fetched for auth, rejected, soft-failed:
        # messages of banned users among them) keep only their redacted form.
        cursor: str | None = None
        while True:
            expired, cursor = await self._store.expired_outliers_in_room(
                room_id, before_ts, cursor, self._config.purge_batch_size
            )
            if expired:
                total.add(await self._purger.rewrite_outliers(expired))
            if cursor is None:
                return total
            await asyncio.sleep(0)

    async def _purge_redacted(self, redacted_before_ts: int) -> PurgeCount:
        total = PurgeCount()
        after: int | None = None
        while True:
            batch = await self._store.redacted_unpurged(
                redacted_before_ts, after, self._config.purge_batch_size
            )
            if not batch:
                return total
            total.add(await self._purger.rewrite(batch))
            after = batch[-1].stream_ordering
            await asyncio.sleep(0)

    # -- background ----------------------------------------------------------------------

    async def start(self) -> None:
        """Purge every ``purge_interval`` seconds (when retention is enabled)."""
        if self._config.enabled:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _purge(self) -> None:
        report = await self.run()
        if report.purged.events or report.redacted_content.events:
            logger.info(
                "retention purged %d events (%d held, %d media) and the content of %d"
                " redacted events",
                report.purged.events,
                report.purged.held,
                report.purged.media,
                report.redacted_content.events,
            )
