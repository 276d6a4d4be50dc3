"""Downloads (Client-Server API, "Content repository": ``GET /media/download``).

Which media may be served: a valid ``mxc://`` URI, not quarantined, uploaded (a reserved
ID's download waits for its upload), and through the deprecated unauthenticated endpoints
only media from before the spec's freeze. Another server's media comes from the remote
cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.services.media.access_times import AccessTimes
from peyvand.services.media.content import MediaContent
from peyvand.services.media.remote_cache import RemoteMediaCache
from peyvand.services.media.reservations import Reservations
from peyvand.storage.media import MediaRow
from peyvand.types import ServerName, is_valid_server_name

# Content repository, "Matrix Content (mxc://) URIs": only these characters in a media ID.
_MEDIA_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")


@dataclass(frozen=True, slots=True)
class Download:
    """A file to serve: the API layer streams it (with Range support) and adds headers."""

    path: Path
    content_type: str
    upload_name: str | None
    size: int


class Downloads:
    def __init__(
        self,
        config: MediaConfig,
        content: MediaContent,
        *,
        reservations: Reservations,
        remote: RemoteMediaCache,
        access: AccessTimes,
    ) -> None:
        self._frozen_before_ts = config.unauthenticated_media_before_ts
        self._content = content
        self._reservations = reservations
        self._remote = remote
        self._access = access

    async def download(
        self,
        origin: ServerName,
        media_id: str,
        *,
        timeout_ms: int | None,
        authenticated: bool,
    ) -> Download:
        """The content of ``mxc://origin/media_id``, waiting up to ``timeout_ms`` for a
        pending upload (504 M_NOT_YET_UPLOADED after that)."""
        row = await self.ready_row(origin, media_id, timeout_ms, authenticated)
        assert row.sha256 is not None and row.size is not None
        self._access.record((origin, media_id))
        return Download(
            self._content.files.path_of(row.sha256),
            row.content_type or "application/octet-stream",
            row.upload_name,
            row.size,
        )

    async def ready_row(
        self, origin: ServerName, media_id: str, timeout_ms: int | None, authenticated: bool
    ) -> MediaRow:
        """The row of media that may be served to this request (its content is stored)."""
        if not is_valid_server_name(origin) or not _MEDIA_ID.fullmatch(media_id):
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")
        if not authenticated and self._frozen_before_ts is None:
            raise _frozen()
        if origin != self._content.server_name:
            return await self._remote_row(origin, media_id, authenticated)
        row = await self._content.store.get(origin, media_id)
        if row is not None and row.pending:
            # Checked before waiting: its upload can only come later than its creation, so
            # an unauthenticated request never waits for media it will not be given.
            if not authenticated and not self._served_unauthenticated(row.created_ts):
                raise _frozen()
            row = await self._reservations.wait_for_upload(row, timeout_ms)
        if row is None or row.quarantined_by is not None:
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")
        if not authenticated and not self._served_unauthenticated(row.uploaded_ts or 0):
            raise _frozen()
        return row

    async def _remote_row(self, origin: ServerName, media_id: str, authenticated: bool) -> MediaRow:
        """Another server's media, cached here. For the freeze, its "upload" is when it was
        cached."""
        row = await self._remote.row(origin, media_id)
        if row.quarantined_by is not None or row.sha256 is None:
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")
        if not authenticated and not self._served_unauthenticated(row.uploaded_ts or 0):
            raise _frozen()
        return row

    def _served_unauthenticated(self, uploaded_ts: int) -> bool:
        """The spec's freeze: media uploaded before the configured date only."""
        return self._frozen_before_ts is not None and uploaded_ts < self._frozen_before_ts


def _frozen() -> MatrixError:
    return MatrixError(
        Errcode.NOT_FOUND,
        "This media is only available through the authenticated media endpoints",
    )
