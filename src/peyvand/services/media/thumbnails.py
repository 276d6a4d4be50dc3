"""Thumbnails (Client-Server API, "Content repository", "Thumbnails").

Thumbnails are made on request, once per size of a fixed ladder (the request snapped up,
``thumbnailer.snap_thumbnail_size``), and served from storage afterwards. Each is made by a
job of its own that concurrent requests share, so a request that goes away never cancels
the job other requests wait for; a few images are decoded at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterator
from typing import Final

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.media.thumbnailer import (
    ImageInfo,
    ImageTooLarge,
    NotAnImage,
    make_thumbnail,
    probe_image,
    snap_thumbnail_size,
)
from peyvand.services.media.access_times import AccessTimes
from peyvand.services.media.content import MediaContent, storage_errors
from peyvand.services.media.downloads import Download, Downloads
from peyvand.storage.media import MediaRow, ThumbnailRow
from peyvand.types import ServerName

_MAX_SIDE: Final = 4096
_METHODS: Final = ("crop", "scale")
# Pillow decodes at most this many images at once: each may take width x height x 4 bytes.
_CONCURRENCY: Final = 2

_ThumbnailKey = tuple[str, str, int, int, str]


class Thumbnails:
    def __init__(
        self,
        config: MediaConfig,
        content: MediaContent,
        *,
        downloads: Downloads,
        access: AccessTimes,
    ) -> None:
        self._config = config
        self._content = content
        self._downloads = downloads
        self._access = access
        self._jobs: dict[_ThumbnailKey, asyncio.Task[Download]] = {}
        self._slots = asyncio.Semaphore(_CONCURRENCY)

    async def stop(self) -> None:
        """Cancel the thumbnail jobs still running."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    async def thumbnail(
        self,
        origin: ServerName,
        media_id: str,
        *,
        width: int,
        height: int,
        method: str,
        animated: bool,
        timeout_ms: int | None,
        authenticated: bool,
    ) -> Download:
        """A thumbnail at least ``width`` x ``height`` where the image allows ("Thumbnails"):
        the request snapped up to the size ladder, or the original when that is small
        already or the request is beyond the ladder; never an upscaled image."""
        if method not in _METHODS:
            raise MatrixError(Errcode.INVALID_PARAM, "method must be 'crop' or 'scale'")
        if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
            raise MatrixError(
                Errcode.INVALID_PARAM,
                f"width and height must be between 1 and {_MAX_SIDE}",
            )
        row = await self._downloads.ready_row(origin, media_id, timeout_ms, authenticated)
        self._access.record((origin, media_id))
        size = snap_thumbnail_size(width, height, method)
        if size is None:
            return await self._original_image(row)
        stored = await self._content.store.get_thumbnail(origin, media_id, *size, method)
        if stored is not None:
            return Download(
                self._content.files.path_of(stored.sha256), stored.content_type, None, stored.size
            )
        key = (origin, media_id, *size, method)
        job = self._jobs.get(key)
        if job is None:
            job = asyncio.create_task(
                self._make_thumbnail(row, size, method), name=f"media-thumbnail-{media_id}"
            )
            self._jobs[key] = job
            job.add_done_callback(functools.partial(self._job_done, key))
        return await asyncio.shield(job)

    def _job_done(self, key: _ThumbnailKey, job: asyncio.Task[Download]) -> None:
        if self._jobs.get(key) is job:
            del self._jobs[key]
        if not job.cancelled():
            job.exception()  # retrieved: a job nobody waits for any more must not log

    async def _original_image(self, row: MediaRow) -> Download:
        """The original, for a thumbnail request beyond the ladder, if it is an image we
        would thumbnail."""
        assert row.sha256 is not None and row.size is not None
        source = self._content.files.path_of(row.sha256)
        loop = asyncio.get_running_loop()
        with _thumbnail_errors():
            info: ImageInfo = await loop.run_in_executor(
                None, probe_image, source, self._config.max_thumbnail_pixels
            )
        return Download(source, info.content_type, None, row.size)

    async def _make_thumbnail(self, row: MediaRow, size: tuple[int, int], method: str) -> Download:
        assert row.sha256 is not None and row.size is not None
        width, height = size
        source = self._content.files.path_of(row.sha256)
        limit = self._config.max_thumbnail_pixels
        loop = asyncio.get_running_loop()
        async with self._slots:
            with _thumbnail_errors():
                info: ImageInfo = await loop.run_in_executor(None, probe_image, source, limit)
                if info.width <= width and info.height <= height:
                    # "When the content is smaller than the requested dimensions, servers
                    # should return the original content rather than thumbnail it."
                    return Download(source, info.content_type, None, row.size)
                thumbnail = await loop.run_in_executor(
                    None, make_thumbnail, source, width, height, method, limit
                )
        if thumbnail is None:
            return Download(source, info.content_type, None, row.size)
        with storage_errors():
            written = await self._content.files.write_bytes(thumbnail.data)
        stored = ThumbnailRow(
            width, height, method, thumbnail.content_type, written.size, written.sha256
        )
        try:
            async with self._content.locks.hold(written.sha256):
                recorded = await self._content.adopt(
                    written,
                    functools.partial(
                        self._content.store.add_thumbnail, row.origin, row.media_id, stored
                    ),
                )
        finally:
            await self._content.files.discard(written)
        if not recorded:
            existing = await self._content.store.get_thumbnail(
                row.origin, row.media_id, width, height, method
            )
            if existing is None:
                raise MatrixError(Errcode.NOT_FOUND, "Media not found")
            stored = existing
        return Download(
            self._content.files.path_of(stored.sha256), stored.content_type, None, stored.size
        )


@contextlib.contextmanager
def _thumbnail_errors() -> Iterator[None]:
    """The thumbnailer's verdicts as client errors; a file deleted meanwhile is a 404."""
    try:
        yield
    except NotAnImage:
        raise MatrixError(Errcode.UNKNOWN, "Cannot generate a thumbnail for this content") from None
    except ImageTooLarge:
        raise MatrixError(Errcode.TOO_LARGE, "The image is too large to thumbnail") from None
    except FileNotFoundError:
        raise MatrixError(Errcode.NOT_FOUND, "Media not found") from None
