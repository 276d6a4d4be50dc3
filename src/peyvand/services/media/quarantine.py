"""Quarantined media: never served again, kept as evidence (an admin's decision, for an
item and every other item with the same bytes)."""

from __future__ import annotations

from peyvand.errors import Errcode, MatrixError
from peyvand.services.media.content import MediaContent
from peyvand.types import ServerName, UserID


class Quarantine:
    def __init__(self, content: MediaContent) -> None:
        self._content = content

    async def set_quarantined(
        self, origin: ServerName, media_id: str, admin: UserID | None
    ) -> None:
        """Quarantine (never served again, kept as evidence) or release an item and every
        other item with the same bytes."""
        row = await self._content.store.get(origin, media_id)
        if row is None:
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")
        if row.sha256 is None:
            found = await self._content.store.set_quarantined(origin, media_id, admin)
        else:
            # Under the hash lock, so an upload of the same bytes (which reads the hash's
            # quarantine under it) lands either before (and is marked) or after (and copies).
            async with self._content.locks.hold(row.sha256):
                found = await self._content.store.set_quarantined(origin, media_id, admin)
        if not found:
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")
