"""``RemoteMediaCache.stop``: a fetch of another server's media outlives the request that
started it (concurrent requests share it); stopping cancels it, so it never writes to a
database that is closing."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from peyvand.config import MediaConfig
from peyvand.services.media.remote import RemoteContent
from peyvand.services.media.remote_cache import RemoteMediaCache
from peyvand.storage.media import MediaRow
from peyvand.types import ServerName

WAIT_SECONDS = 5.0


class NothingCached:
    async def get(self, origin: ServerName, media_id: str) -> MediaRow | None:
        return None


class Files:
    async def discard(self, written: object) -> None:
        return None


class Content:
    store = NothingCached()
    files = Files()

    def __init__(self) -> None:
        self.added = 0

    async def add(self, *args: Any) -> MediaRow:
        self.added += 1
        return cast(MediaRow, None)


async def test_stop_cancels_the_fetches_still_running() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def fetch(origin: ServerName, media_id: str, max_size: int) -> RemoteContent:
        started.set()
        await release.wait()
        return RemoteContent("image/png", None, cast(Any, object()))

    content = Content()
    cache = RemoteMediaCache(MediaConfig(), cast(Any, content), fetch)
    request = asyncio.ensure_future(cache.row(ServerName("other.example"), "abc"))
    await asyncio.wait_for(started.wait(), WAIT_SECONDS)
    request.cancel()  # the client left: the fetch goes on for others
    await asyncio.sleep(0)
    async with asyncio.timeout(WAIT_SECONDS):
        await cache.stop()
    release.set()
    await asyncio.sleep(0.01)
    assert content.added == 0
    assert request.cancelled()
