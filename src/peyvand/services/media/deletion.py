"""Deleting media: rows, their thumbnails, and the files no row names any more.

Used by the admin API (one item, or a purge by last access), by the compliance jobs
(erasure, history purges) and by the janitor's orphan sweep. Each file is removed under its
hash lock, after checking again that no row names it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from peyvand.services.media.access_times import AccessTimes
from peyvand.services.media.content import MediaContent
from peyvand.services.media.reservations import Reservations
from peyvand.storage.media import MediaKey

_PURGE_BATCH: Final = 100
# How old a file no row names must be before the orphan sweep removes it.
ORPHAN_AGE_SECONDS: Final = 3600.0


class MediaDeletion:
    def __init__(
        self, content: MediaContent, *, reservations: Reservations, access: AccessTimes
    ) -> None:
        self._content = content
        self._reservations = reservations
        self._access = access

    async def delete(self, keys: Sequence[MediaKey], *, unless_named: bool = False) -> int:
        """Delete media rows, their thumbnails and every file no other row uses; the number
        of media items deleted. Downloads waiting for a deleted reservation are woken.
        ``unless_named``: keep the items an event names (checked in the deleting
        transaction)."""
        deleted, hashes = await self._content.store.delete(keys, unless_named=unless_named)
        self._reservations.wake(keys)
        # One query for the whole batch; only its candidates are checked again, each under
        # its hash lock (a file still named now can only lose its last row through another
        # delete, which then finds it itself).
        for sha256 in sorted(await self._content.store.unreferenced(sorted(hashes))):
            async with self._content.locks.hold(sha256):
                await self._content.remove_if_unreferenced(sha256)
        return deleted

    async def purge_not_accessed_since(
        self, before_ts: int, *, local: bool, keep_profile_media: bool = True
    ) -> int:
        """Delete media not downloaded since ``before_ts``, in batches (database and files
        agree after each); local uploads when ``local``, else the remote-media cache.
        Quarantined media and (by default) profile pictures are kept."""
        await self._access.flush()
        total = 0
        while True:
            batch = await self._content.store.not_accessed_since(
                before_ts,
                local_origin=self._content.server_name,
                local=local,
                keep_profile_media=keep_profile_media,
                limit=_PURGE_BATCH,
            )
            if not batch:
                return total
            total += await self.delete(batch)

    async def sweep_orphan_files(self) -> int:
        """Remove files no row names (left by a crash, or a database error, between a file
        and its row), written over ``ORPHAN_AGE_SECONDS`` ago: a file just written may be
        waiting for its row, in this process or another sharing the store."""
        removed = 0
        settled_before = time.time() - ORPHAN_AGE_SECONDS
        async for hashes in self._content.files.stored_hashes(settled_before):
            for sha256 in await self._content.store.unreferenced(hashes):
                async with self._content.locks.hold(sha256):
                    if await self._content.remove_if_unreferenced(sha256):
                        removed += 1
        return removed
