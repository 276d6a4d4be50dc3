"""The media repository's periodic jobs: writing recorded access times, expiring
reservations (their waiting downloads answer 404), and, at start-up and every few hours,
removing files left without a row (a crash, or a database error, between a file and its
row)."""

from __future__ import annotations

import logging
from typing import Final

from peyvand.background import periodic
from peyvand.services.media.access_times import AccessTimes
from peyvand.services.media.deletion import MediaDeletion
from peyvand.services.media.reservations import Reservations

logger = logging.getLogger(__name__)

_ACCESS_FLUSH_SECONDS: Final = 30.0
_JANITOR_SECONDS: Final = 600.0
_ORPHAN_SWEEP_SECONDS: Final = 6 * 3600.0


class MediaJanitor:
    def __init__(
        self, access: AccessTimes, reservations: Reservations, deletion: MediaDeletion
    ) -> None:
        self._deletion = deletion
        self._tasks = (
            periodic("media-access", _ACCESS_FLUSH_SECONDS, access.flush),
            periodic(
                "media-reservations",
                _JANITOR_SECONDS,
                reservations.expire_pending,
                run_at_start=True,
            ),
            periodic(
                "media-orphan-sweep",
                _ORPHAN_SWEEP_SECONDS,
                self._sweep_orphan_files,
                run_at_start=True,
            ),
        )

    def start(self) -> None:
        for task in self._tasks:
            task.start()

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            await task.stop()

    async def _sweep_orphan_files(self) -> None:
        removed = await self._deletion.sweep_orphan_files()
        if removed:
            logger.info("removed %d orphaned media files", removed)
