"""Other servers' media, cached here (Client-Server API, "Content repository": media whose
``mxc://`` URI names another server).

Each item is fetched once, by the fetcher federation provides: concurrent requests share
the fetch, and a few fetches run at a time (each streams to a temporary file). The fetched
content is stored like an upload without an owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.services.media.content import MediaContent
from peyvand.services.media.remote import RemoteContent, RemoteMediaError
from peyvand.storage.media import MediaKey, MediaRow
from peyvand.types import ServerName

# Remote media downloads at once (each streams to a temporary file).
_REMOTE_CONCURRENCY: Final = 4

RemoteFetch = Callable[[ServerName, str, int], Awaitable[RemoteContent]]
"""(origin, media ID, max size) -> the content, or RemoteMediaError."""


async def no_remote_media(origin: ServerName, media_id: str, max_size: int) -> RemoteContent:
    """``RemoteFetch`` where federation is off: other servers' media is not available."""
    raise MatrixError(Errcode.NOT_FOUND, "Remote media is not available")


class RemoteMediaCache:
    def __init__(self, config: MediaConfig, content: MediaContent, fetch: RemoteFetch) -> None:
        """Other servers' media is fetched with ``fetch`` (federation)."""
        self._config = config
        self._content = content
        self._fetch = fetch
        self._fetches: dict[MediaKey, asyncio.Future[MediaRow]] = {}
        self._slots = asyncio.Semaphore(_REMOTE_CONCURRENCY)

    async def row(self, origin: ServerName, media_id: str) -> MediaRow:
        """The row of another server's media: from the cache, else fetched once (concurrent
        requests share the fetch) and cached."""
        row = await self._content.store.get(origin, media_id)
        if row is not None:
            return row
        key = (origin, media_id)
        running = self._fetches.get(key)
        if running is None:
            running = asyncio.ensure_future(self._cache(origin, media_id))
            self._fetches[key] = running
            running.add_done_callback(lambda _: self._fetches.pop(key, None))
        return await asyncio.shield(running)

    async def stop(self) -> None:
        """Cancel the fetches still running (they outlive the requests that started
        them), before the database closes."""
        fetches = list(self._fetches.values())
        for fetch in fetches:
            fetch.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)

    async def _cache(self, origin: ServerName, media_id: str) -> MediaRow:
        async with self._slots:
            try:
                content = await self._fetch(origin, media_id, self._config.max_upload_size)
            except RemoteMediaError as exc:
                raise MatrixError(
                    Errcode.NOT_FOUND, f"Remote media could not be fetched: {exc}"
                ) from exc
        written = content.written
        try:
            return await self._content.add(
                origin, media_id, None, content.content_type, content.upload_name, written
            )
        finally:
            await self._content.files.discard(written)
