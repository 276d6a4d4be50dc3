"""When media was last downloaded: recorded in memory on every download and thumbnail,
written to the database in one batch by the janitor (and before a purge by access time).
"""

from __future__ import annotations

from peyvand.services.media.content import MediaContent
from peyvand.storage.media import MediaKey


class AccessTimes:
    def __init__(self, content: MediaContent) -> None:
        self._content = content
        self._accessed: dict[MediaKey, int] = {}

    def record(self, key: MediaKey) -> None:
        """``key`` was served now."""
        self._accessed[key] = self._content.now_ms()

    async def flush(self) -> None:
        """Write the access times recorded since the last flush."""
        if not self._accessed:
            return
        accessed, self._accessed = self._accessed, {}
        await self._content.store.touch(
            [(origin, mid, ts) for (origin, mid), ts in accessed.items()]
        )
