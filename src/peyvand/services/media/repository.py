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
from collections.abc import Callable

from peyvand.config import MediaConfig
from peyvand.media.files import MediaFiles
from peyvand.services.media.access_times import AccessTimes
from peyvand.services.media.content import MediaContent
from peyvand.services.media.deletion import MediaDeletion
from peyvand.services.media.downloads import Downloads
from peyvand.services.media.janitor import MediaJanitor
from peyvand.services.media.quarantine import Quarantine
from peyvand.services.media.remote_cache import RemoteFetch, RemoteMediaCache, no_remote_media
from peyvand.services.media.reservations import Reservations
from peyvand.services.media.thumbnails import Thumbnails
from peyvand.services.media.uploads import Uploads
from peyvand.storage.media import MediaStore
from peyvand.types import ServerName


class MediaService:
    def __init__(
        self,
        server_name: ServerName,
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
        content = MediaContent(server_name, store, files, clock)
        self.reservations = Reservations(config, content)
        self.uploads = Uploads(
            config, content, reservations=self.reservations, admin_contact=admin_contact
        )
        self.remote = RemoteMediaCache(config, content, remote_fetch)
        self.access = AccessTimes(content)
        self.downloads = Downloads(
            config, content, reservations=self.reservations, remote=self.remote, access=self.access
        )
        self.thumbnails = Thumbnails(config, content, downloads=self.downloads, access=self.access)
        self.quarantine = Quarantine(content)
        self.deletion = MediaDeletion(content, reservations=self.reservations, access=self.access)
        self.janitor = MediaJanitor(self.access, self.reservations, self.deletion)
        # The requests, each answered by the part that does the job.
        self.config_json = self.uploads.config_json
        self.check_declared_size = self.uploads.check_declared_size
        self.upload = self.uploads.upload
        self.create = self.reservations.create
        self.upload_to = self.uploads.upload_to
        self.store_bytes = self.uploads.store_bytes
        self.download = self.downloads.download
        self.thumbnail = self.thumbnails.thumbnail
        self.set_quarantined = self.quarantine.set_quarantined
        self.delete = self.deletion.delete
        self.purge_not_accessed_since = self.deletion.purge_not_accessed_since

    async def start(self) -> None:
        await self._files.start()
        self.janitor.start()

    async def stop(self) -> None:
        await self.janitor.stop()
        await self.remote.stop()
        await self.thumbnails.stop()
        await self.access.flush()
