"""The media repository (Client-Server API, "Content repository") as one service: it builds
its parts and hands each request to the part that does the job.

- ``uploads``: uploads, to a new ID or to one reserved with ``/create`` (``reservations``);
- ``downloads``: what may be served (freeze, quarantine, waiting for a reserved upload),
  other servers' media through ``remote_cache``; ``thumbnails`` on the size ladder;
- ``quarantine`` and ``deletion`` for admins and the compliance jobs;
- ``janitor``: the periodic jobs (access times, expired reservations, orphaned files).

Files and the rows naming them are kept in agreement by ``content.MediaContent``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable, Sequence

from peyvand.config import MediaConfig
from peyvand.media.files import MediaFiles
from peyvand.services.accounts.requester import Requester
from peyvand.services.media.access_times import AccessTimes
from peyvand.services.media.content import MediaContent
from peyvand.services.media.deletion import MediaDeletion
from peyvand.services.media.downloads import Download, Downloads
from peyvand.services.media.janitor import MediaJanitor
from peyvand.services.media.quarantine import Quarantine
from peyvand.services.media.remote_cache import RemoteFetch, RemoteMediaCache, no_remote_media
from peyvand.services.media.reservations import Created, Reservations
from peyvand.services.media.thumbnails import Thumbnails
from peyvand.services.media.uploads import Uploads
from peyvand.storage.media import MediaKey, MediaStore
from peyvand.types import UserID


class MediaService:
    def __init__(
        self,
        server_name: str,
        config: MediaConfig,
        store: MediaStore,
        files: MediaFiles,
        *,
        remote_fetch: RemoteFetch = no_remote_media,
        admin_contact: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Other servers' media is fetched with ``remote_fetch`` (federation; by default
        none is available)."""
        self._files = files
        content = MediaContent(store, files, clock)
        self.reservations = Reservations(server_name, config, store, content)
        self.uploads = Uploads(
            server_name,
            config,
            store,
            files,
            content,
            reservations=self.reservations,
            admin_contact=admin_contact,
        )
        self.remote = RemoteMediaCache(config, store, files, content, remote_fetch)
        self.access = AccessTimes(store, content)
        self.downloads = Downloads(
            server_name,
            config,
            store,
            files,
            reservations=self.reservations,
            remote=self.remote,
            access=self.access,
        )
        self.thumbnails = Thumbnails(
            config, store, files, content, downloads=self.downloads, access=self.access
        )
        self.quarantine = Quarantine(store, content)
        self.deletion = MediaDeletion(
            server_name, store, files, content, reservations=self.reservations, access=self.access
        )
        self.janitor = MediaJanitor(self.access, self.reservations, self.deletion)

    async def start(self) -> None:
        await self._files.start()
        self.janitor.start()

    async def stop(self) -> None:
        await self.janitor.stop()
        await self.thumbnails.stop()
        await self.access.flush()

    # -- uploads -------------------------------------------------------------------------

    def config_json(self) -> dict[str, int]:
        """GET /media/config."""
        return self.uploads.config_json()

    def check_declared_size(self, content_length: int | None) -> None:
        """Refuse before reading a body whose Content-Length is over the limit."""
        self.uploads.check_declared_size(content_length)

    async def upload(
        self,
        requester: Requester,
        body: AsyncIterable[bytes],
        *,
        content_length: int | None,
        content_type: str | None,
        upload_name: str | None,
    ) -> str:
        """POST /media/v3/upload: store the body; its ``mxc://`` URI."""
        return await self.uploads.upload(
            requester,
            body,
            content_length=content_length,
            content_type=content_type,
            upload_name=upload_name,
        )

    async def create(self, requester: Requester) -> Created:
        """POST /media/v1/create: reserve a media ID for a later upload."""
        return await self.reservations.create(requester)

    async def upload_to(
        self,
        requester: Requester,
        origin: str,
        media_id: str,
        body: AsyncIterable[bytes],
        *,
        content_length: int | None,
        content_type: str | None,
        upload_name: str | None,
    ) -> None:
        """PUT /media/v3/upload/{serverName}/{mediaId}: the content of a reserved ID."""
        await self.uploads.upload_to(
            requester,
            origin,
            media_id,
            body,
            content_length=content_length,
            content_type=content_type,
            upload_name=upload_name,
        )

    async def store_bytes(self, data: bytes, content_type: str, upload_name: str | None) -> str:
        """Store content the server fetched itself (URL preview images); its mxc URI."""
        return await self.uploads.store_bytes(data, content_type, upload_name)

    # -- downloads -----------------------------------------------------------------------

    async def download(
        self,
        origin: str,
        media_id: str,
        *,
        timeout_ms: int | None,
        authenticated: bool,
    ) -> Download:
        """The content of ``mxc://origin/media_id``, waiting up to ``timeout_ms`` for a
        pending upload (504 M_NOT_YET_UPLOADED after that)."""
        return await self.downloads.download(
            origin, media_id, timeout_ms=timeout_ms, authenticated=authenticated
        )

    async def thumbnail(
        self,
        origin: str,
        media_id: str,
        *,
        width: int,
        height: int,
        method: str,
        animated: bool,
        timeout_ms: int | None,
        authenticated: bool,
    ) -> Download:
        """A thumbnail at least ``width`` x ``height`` where the image allows ("Thumbnails")."""
        return await self.thumbnails.thumbnail(
            origin,
            media_id,
            width=width,
            height=height,
            method=method,
            animated=animated,
            timeout_ms=timeout_ms,
            authenticated=authenticated,
        )

    # -- administration ------------------------------------------------------------------

    async def set_quarantined(self, origin: str, media_id: str, admin: UserID | None) -> None:
        """Quarantine (never served again, kept as evidence) or release an item and every
        other item with the same bytes."""
        await self.quarantine.set_quarantined(origin, media_id, admin)

    async def delete(self, keys: Sequence[MediaKey], *, unless_named: bool = False) -> int:
        """Delete media rows, their thumbnails and every file no other row uses; the number
        of media items deleted (``MediaDeletion.delete``)."""
        return await self.deletion.delete(keys, unless_named=unless_named)

    async def purge_not_accessed_since(
        self, before_ts: int, *, local: bool, keep_profile_media: bool = True
    ) -> int:
        """Delete media not downloaded since ``before_ts``; local uploads when ``local``,
        else the remote-media cache (``MediaDeletion.purge_not_accessed_since``)."""
        return await self.deletion.purge_not_accessed_since(
            before_ts, local=local, keep_profile_media=keep_profile_media
        )
