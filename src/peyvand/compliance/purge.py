"""Deleting stored history while legal holds win (docs/compliance.md).

Retention, disappearing messages, the redacted-content purge and erasure all end here:
``purge`` takes events out of the timeline (``PurgeStore.purge``), ``rewrite`` keeps
them but deletes their content (``PurgeStore.rewrite_content``). Both first drop the
events a legal hold covers, then delete the media no remaining event names and the
cached copies of what changed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from peyvand.services.timeline.room_state import StateService
from peyvand.storage.purge import PurgeCandidate, PurgeResult, PurgeStore
from peyvand.types import EventID

__all__ = ["HeldCheck", "HistoryPurger", "PurgeCount"]

# The IDs of those events a legal hold covers (compliance.legal_hold.LegalHolds.held).
HeldCheck = Callable[[Sequence[PurgeCandidate]], Awaitable[set[EventID]]]
DeleteMedia = Callable[[Sequence[tuple[str, str]]], Awaitable[int]]


@dataclass(slots=True)
class PurgeCount:
    """What a purge did (added up over batches)."""

    events: int = 0
    held: int = 0
    media: int = 0

    def add(self, other: PurgeCount) -> None:
        self.events += other.events
        self.held += other.held
        self.media += other.media


class HistoryPurger:
    def __init__(
        self,
        store: PurgeStore,
        state: StateService,
        held: HeldCheck,
        delete_media: DeleteMedia,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._state = state
        self._held = held
        self._delete_media = delete_media
        self._clock = clock

    async def purge(self, candidates: Sequence[PurgeCandidate], reason: str) -> PurgeCount:
        """Take ``candidates`` out of the timeline, except what a hold covers or what is
        the room's current state."""
        kept = await self._held(candidates)
        doomed = [c.event_id for c in candidates if c.event_id not in kept]
        self._state.forget_events(doomed)
        result = await self._store.purge(doomed, reason)
        return await self._finish(result, len(kept))

    async def rewrite(self, candidates: Sequence[PurgeCandidate]) -> PurgeCount:
        """Delete the content of ``candidates`` (kept as redacted events), except what a
        hold covers or what is the room's current state."""
        kept = await self._held(candidates)
        doomed = [c.event_id for c in candidates if c.event_id not in kept]
        self._state.forget_events(doomed)
        result = await self._store.rewrite_content(doomed, int(self._clock() * 1000))
        return await self._finish(result, len(kept))

    async def rewrite_outliers(self, candidates: Sequence[PurgeCandidate]) -> PurgeCount:
        """Delete the content of events held outside the timeline (outliers, rejected,
        soft-failed), except what a hold covers or what is current state."""
        kept = await self._held(candidates)
        doomed = [c.event_id for c in candidates if c.event_id not in kept]
        self._state.forget_events(doomed)
        result = await self._store.rewrite_outliers(doomed, int(self._clock() * 1000))
        return await self._finish(result, len(kept))

    async def _finish(self, result: PurgeResult, held: int) -> PurgeCount:
        # Again after the commit: a read that began before it may have cached the old
        # form in between.
        self._state.forget_events(result.event_ids)
        media = (
            await self._delete_media(result.unreferenced_media) if result.unreferenced_media else 0
        )
        return PurgeCount(len(result.event_ids), held, media)
