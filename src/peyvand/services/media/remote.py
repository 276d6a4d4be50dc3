"""Fetching media from the server that holds it into a temporary media file
(``FederationTransport.download_media`` does the requests and reads the answers).
"""

from __future__ import annotations

from peyvand.federation.media import MediaDownloadError, RemoteMedia
from peyvand.federation.transport import FederationTransport
from peyvand.media.files import MediaFiles, WrittenFile
from peyvand.types import ServerName

# ``written`` is a temporary media file: the caller commits or discards it.
RemoteContent = RemoteMedia[WrittenFile]


class RemoteMediaError(Exception):
    """The media could not be fetched (unknown, too large, unreachable, malformed)."""


class RemoteMediaFetcher:
    def __init__(self, transport: FederationTransport, files: MediaFiles) -> None:
        self._transport = transport
        self._files = files

    async def fetch(self, origin: ServerName, media_id: str, max_size: int) -> RemoteContent:
        """The content of ``mxc://origin/media_id``, at most ``max_size`` bytes."""
        try:
            return await self._transport.download_media(
                origin, media_id, max_size, self._files.open_writer
            )
        except MediaDownloadError as exc:
            raise RemoteMediaError(str(exc)) from exc
