"""The media repository (Client-Server API, "Content repository").

Uploads stream into a temporary file while being hashed and counted, so memory stays flat
whatever the size; only a complete upload within the limits becomes a file and a row.
Files are content-addressed and shared (``peyvand.media.files``); each file operation and
its row change happen under the file's hash lock, so the database and the media directory
agree after every step, including deletes and purges. Thumbnails are made on request, at
the size asked for, once: later requests are served from the stored thumbnail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import string
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.media.files import HashLocks, MediaFiles, WrittenFile
from peyvand.media.thumbnailer import (
    ImageInfo,
    ImageTooLarge,
    NotAnImage,
    make_thumbnail,
    probe_image,
)
from peyvand.services.requester import Requester
from peyvand.storage.media import MediaKey, MediaRow, MediaStore, ThumbnailRow
from peyvand.types import UserID, is_valid_server_name

logger = logging.getLogger(__name__)

# Content repository, "Matrix Content (mxc://) URIs": only these characters in a media ID.
_MEDIA_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")
_ID_ALPHABET: Final = string.ascii_letters + string.digits
_MAX_TIMEOUT_MS: Final = 60_000
_DEFAULT_TIMEOUT_MS: Final = 20_000
_MAX_THUMBNAIL_SIDE: Final = 4096
_THUMBNAIL_METHODS: Final = ("crop", "scale")
# Pillow decodes at most this many images at once: each may take width x height x 4 bytes.
_THUMBNAIL_CONCURRENCY: Final = 2
_ACCESS_FLUSH_SECONDS: Final = 30.0
_JANITOR_SECONDS: Final = 600.0
_PURGE_BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class Download:
    """A file to serve: the API layer streams it (with Range support) and adds headers."""

    path: Path
    content_type: str
    upload_name: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Created:
    content_uri: str
    unused_expires_at: int


class MediaService:
    def __init__(
        self,
        server_name: str,
        config: MediaConfig,
        store: MediaStore,
        files: MediaFiles,
        *,
        admin_contact: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._config = config
        self._store = store
        self._files = files
        self._admin_contact = admin_contact
        self._clock = clock
        self._locks = HashLocks()
        self._uploaded: dict[MediaKey, asyncio.Event] = {}
        self._accessed: dict[MediaKey, int] = {}
        self._thumbnailing: dict[tuple[str, str, int, int, str], asyncio.Future[Download]] = {}
        self._thumbnail_slots = asyncio.Semaphore(_THUMBNAIL_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def start(self) -> None:
        await self._files.start()
        self._tasks = [
            asyncio.create_task(self._flush_access_loop(), name="media-access"),
            asyncio.create_task(self._janitor_loop(), name="media-janitor"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._flush_access()

    def config_json(self) -> dict[str, int]:
        """GET /media/config."""
        return {"m.upload.size": self._config.max_upload_size}

    # -- uploads -------------------------------------------------------------------------

    def check_declared_size(self, content_length: int | None) -> None:
        """Refuse before reading a body whose Content-Length is over the limit."""
        if content_length is not None and content_length > self._config.max_upload_size:
            raise self._too_large()

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
        content_type = _content_type(content_type)
        _check_upload_name(upload_name)
        written = await self._receive(requester.user_id, body, content_length)
        try:
            media_id = _new_media_id()
            async with self._locks.hold(written.sha256):
                quarantined_by = await self._store.quarantined_hash(written.sha256)
                await self._files.commit(written)
                now = self.now_ms()
                await self._store.add_uploaded(
                    MediaRow(
                        origin=self._server_name,
                        media_id=media_id,
                        user_id=requester.user_id,
                        content_type=content_type,
                        upload_name=upload_name,
                        size=written.size,
                        sha256=written.sha256,
                        created_ts=now,
                        uploaded_ts=now,
                        expires_ts=None,
                        last_access_ts=now,
                        quarantined_by=quarantined_by,
                    )
                )
        finally:
            await self._files.discard(written)
        return f"mxc://{self._server_name}/{media_id}"

    async def create(self, requester: Requester) -> Created:
        """POST /media/v1/create: reserve a media ID for a later upload."""
        now = self.now_ms()
        pending = await self._store.count_pending(requester.user_id, now)
        if pending >= self._config.max_pending_uploads:
            raise MatrixError(
                Errcode.LIMIT_EXCEEDED,
                "Too many pending media uploads",
                retry_after_ms=60_000,
            )
        media_id = _new_media_id()
        expires_ts = now + self._config.pending_upload_lifetime * 1000
        await self._store.add_pending(
            self._server_name, media_id, requester.user_id, now, expires_ts
        )
        return Created(f"mxc://{self._server_name}/{media_id}", expires_ts)

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
        content_type = _content_type(content_type)
        _check_upload_name(upload_name)
        row = await self._store.get(origin, media_id) if origin == self._server_name else None
        if row is None or (row.pending and (row.expires_ts or 0) <= self.now_ms()):
            raise MatrixError(Errcode.NOT_FOUND, "Unknown media ID")
        if row.user_id != requester.user_id:
            raise MatrixError(Errcode.FORBIDDEN, "This media ID belongs to another user")
        if not row.pending:
            raise MatrixError(Errcode.CANNOT_OVERWRITE_MEDIA, "Media already uploaded")
        written = await self._receive(requester.user_id, body, content_length)
        try:
            async with self._locks.hold(written.sha256):
                quarantined_by = await self._store.quarantined_hash(written.sha256)
                await self._files.commit(written)
                completed = await self._store.complete_pending(
                    origin,
                    media_id,
                    content_type=content_type,
                    upload_name=upload_name,
                    size=written.size,
                    sha256=written.sha256,
                    now=self.now_ms(),
                    quarantined_by=quarantined_by,
                )
                if not completed:
                    await self._remove_if_unreferenced(written.sha256)
        finally:
            await self._files.discard(written)
        if not completed:
            raise MatrixError(Errcode.CANNOT_OVERWRITE_MEDIA, "Media already uploaded")
        event = self._uploaded.pop((origin, media_id), None)
        if event is not None:
            event.set()

    async def store_bytes(
        self, user_id: UserID, data: bytes, content_type: str, upload_name: str | None
    ) -> str:
        """Store content the server fetched itself (URL preview images); its mxc URI."""
        written = await self._files.write_bytes(data)
        media_id = _new_media_id()
        try:
            async with self._locks.hold(written.sha256):
                quarantined_by = await self._store.quarantined_hash(written.sha256)
                await self._files.commit(written)
                now = self.now_ms()
                await self._store.add_uploaded(
                    MediaRow(
                        self._server_name,
                        media_id,
                        user_id,
                        content_type,
                        upload_name,
                        written.size,
                        written.sha256,
                        now,
                        now,
                        None,
                        now,
                        quarantined_by,
                    )
                )
        finally:
            await self._files.discard(written)
        return f"mxc://{self._server_name}/{media_id}"

    async def _receive(
        self, user_id: UserID, body: AsyncIterable[bytes], content_length: int | None
    ) -> WrittenFile:
        """Stream ``body`` into a temporary file, refusing it as soon as it passes the
        upload size limit (413) or the user's remaining quota."""
        room = None
        if self._config.user_quota is not None:
            room = self._config.user_quota - await self._store.usage_of(user_id)
            if (content_length or 0) > room:
                raise self._quota_exceeded()
        writer = await self._files.open_writer()
        try:
            async for chunk in body:
                size = writer.size + len(chunk)
                if size > self._config.max_upload_size:
                    raise self._too_large()
                if room is not None and size > room:
                    raise self._quota_exceeded()
                await writer.write(chunk)
            return await writer.finish()
        except BaseException:
            await writer.discard()
            raise

    def _quota_exceeded(self) -> MatrixError:
        error = MatrixError(Errcode.RESOURCE_LIMIT_EXCEEDED, "Media quota exceeded")
        if self._admin_contact:
            error.extra["admin_contact"] = self._admin_contact
        return error

    def _too_large(self) -> MatrixError:
        limit = self._config.max_upload_size
        return MatrixError(Errcode.TOO_LARGE, f"Cannot upload files larger than {limit} bytes")

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
        row = await self._ready_row(origin, media_id, timeout_ms, authenticated)
        assert row.sha256 is not None and row.size is not None
        self._accessed[(origin, media_id)] = self.now_ms()
        return Download(
            self._files.path_of(row.sha256),
            row.content_type or "application/octet-stream",
            row.upload_name,
            row.size,
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
        """A thumbnail at least ``width`` x ``height`` where the image allows ("Thumbnails"):
        the original when it is that small already, never an upscaled image."""
        if method not in _THUMBNAIL_METHODS:
            raise MatrixError(Errcode.INVALID_PARAM, "method must be 'crop' or 'scale'")
        if not (1 <= width <= _MAX_THUMBNAIL_SIDE and 1 <= height <= _MAX_THUMBNAIL_SIDE):
            raise MatrixError(
                Errcode.INVALID_PARAM,
                f"width and height must be between 1 and {_MAX_THUMBNAIL_SIDE}",
            )
        row = await self._ready_row(origin, media_id, timeout_ms, authenticated)
        self._accessed[(origin, media_id)] = self.now_ms()
        stored = await self._store.get_thumbnail(origin, media_id, width, height, method)
        if stored is not None:
            return Download(
                self._files.path_of(stored.sha256), stored.content_type, None, stored.size
            )
        key = (origin, media_id, width, height, method)
        running = self._thumbnailing.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Download] = asyncio.get_running_loop().create_future()
        self._thumbnailing[key] = future
        try:
            result = await self._make_thumbnail(row, width, height, method, animated)
            future.set_result(result)
            return result
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lone request must not log "never retrieved"
            raise
        finally:
            del self._thumbnailing[key]

    async def _make_thumbnail(
        self, row: MediaRow, width: int, height: int, method: str, animated: bool
    ) -> Download:
        assert row.sha256 is not None and row.size is not None
        source = self._files.path_of(row.sha256)
        limit = self._config.max_thumbnail_pixels
        loop = asyncio.get_running_loop()
        async with self._thumbnail_slots:
            try:
                info: ImageInfo = await loop.run_in_executor(None, probe_image, source, limit)
                if info.width <= width and info.height <= height:
                    # "When the content is smaller than the requested dimensions, servers
                    # should return the original content rather than thumbnail it."
                    return Download(source, info.content_type, None, row.size)
                thumbnail = await loop.run_in_executor(
                    None, make_thumbnail, source, width, height, method, limit
                )
            except NotAnImage:
                raise MatrixError(
                    Errcode.UNKNOWN, "Cannot generate a thumbnail for this content"
                ) from None
            except ImageTooLarge:
                raise MatrixError(
                    Errcode.TOO_LARGE, "The image is too large to thumbnail"
                ) from None
        if thumbnail is None:
            return Download(source, info.content_type, None, row.size)
        written = await self._files.write_bytes(thumbnail.data)
        stored = ThumbnailRow(
            width, height, method, thumbnail.content_type, written.size, written.sha256
        )
        try:
            async with self._locks.hold(written.sha256):
                await self._files.commit(written)
                recorded = await self._store.add_thumbnail(row.origin, row.media_id, stored)
                if not recorded:
                    await self._remove_if_unreferenced(written.sha256)
        finally:
            await self._files.discard(written)
        if not recorded:
            existing = await self._store.get_thumbnail(
                row.origin, row.media_id, width, height, method
            )
            if existing is None:
                raise MatrixError(Errcode.NOT_FOUND, "Media not found")
            stored = existing
        return Download(self._files.path_of(stored.sha256), stored.content_type, None, stored.size)

    async def _ready_row(
        self, origin: str, media_id: str, timeout_ms: int | None, authenticated: bool
    ) -> MediaRow:
        if not is_valid_server_name(origin) or not _MEDIA_ID.fullmatch(media_id):
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")
        if origin != self._server_name:
            raise MatrixError(Errcode.NOT_FOUND, "Remote media is not available")
        row = await self._store.get(origin, media_id)
        if row is not None and row.pending:
            row = await self._wait_for_upload(row, timeout_ms)
        if row is None or row.quarantined_by is not None:
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")
        if not authenticated:
            frozen = self._config.unauthenticated_media_before_ts
            if frozen is None or (row.uploaded_ts or 0) >= frozen:
                raise MatrixError(
                    Errcode.NOT_FOUND,
                    "This media is only available through the authenticated media endpoints",
                )
        return row

    async def _wait_for_upload(self, row: MediaRow, timeout_ms: int | None) -> MediaRow | None:
        """Content repository, ``timeout_ms``: wait for a reserved ID's content to arrive."""
        key = (row.origin, row.media_id)
        if (row.expires_ts or 0) <= self.now_ms():
            return None
        wait_ms = _DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
        wait_ms = max(0, min(wait_ms, _MAX_TIMEOUT_MS))
        event = self._uploaded.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_ms / 1000):
                await event.wait()
        current = await self._store.get(row.origin, row.media_id)
        if current is not None and current.pending:
            raise MatrixError(Errcode.NOT_YET_UPLOADED, "Content has not yet been uploaded")
        return current

    # -- administration ------------------------------------------------------------------

    async def set_quarantined(self, origin: str, media_id: str, admin: UserID | None) -> None:
        """Quarantine one item (never served again, kept as evidence) or release it."""
        if not await self._store.set_quarantined(origin, media_id, admin):
            raise MatrixError(Errcode.NOT_FOUND, "Media not found")

    async def delete(self, keys: Sequence[MediaKey]) -> int:
        """Delete media rows, their thumbnails and every file no other row uses; the number
        of media items deleted."""
        deleted, hashes = await self._store.delete(keys)
        for sha256 in sorted(hashes):
            async with self._locks.hold(sha256):
                await self._remove_if_unreferenced(sha256)
        return deleted

    async def purge_not_accessed_since(
        self, before_ts: int, *, local: bool, keep_profile_media: bool = True
    ) -> int:
        """Delete media not downloaded since ``before_ts``, in batches (database and files
        agree after each); local uploads when ``local``, else the remote-media cache.
        Quarantined media and (by default) profile pictures are kept."""
        await self._flush_access()
        total = 0
        while True:
            batch = await self._store.not_accessed_since(
                before_ts,
                local_origin=self._server_name,
                local=local,
                keep_profile_media=keep_profile_media,
                limit=_PURGE_BATCH,
            )
            if not batch:
                return total
            total += await self.delete(batch)

    async def sweep_orphan_files(self) -> int:
        """Remove files no row names (left by a crash between a file and its row)."""
        removed = 0
        async for hashes in self._files.stored_hashes():
            for sha256 in await self._store.unreferenced(hashes):
                async with self._locks.hold(sha256):
                    if await self._remove_if_unreferenced(sha256):
                        removed += 1
        return removed

    async def _remove_if_unreferenced(self, sha256: str) -> bool:
        """Caller holds the hash lock."""
        if await self._store.unreferenced([sha256]):
            await self._files.remove(sha256)
            return True
        return False

    # -- background ----------------------------------------------------------------------

    async def _flush_access(self) -> None:
        if not self._accessed:
            return
        accessed, self._accessed = self._accessed, {}
        await self._store.touch([(origin, mid, ts) for (origin, mid), ts in accessed.items()])

    async def _flush_access_loop(self) -> None:
        while True:
            await asyncio.sleep(_ACCESS_FLUSH_SECONDS)
            try:
                await self._flush_access()
            except Exception:
                logger.exception("recording media access times failed")

    async def _janitor_loop(self) -> None:
        """Once at start-up and then periodically: drop expired reservations; at start-up
        also remove files orphaned by a crash."""
        try:
            removed = await self.sweep_orphan_files()
            if removed:
                logger.info("removed %d orphaned media files", removed)
        except Exception:
            logger.exception("media orphan sweep failed")
        while True:
            try:
                await self._expire_pending()
            except Exception:
                logger.exception("expiring pending media uploads failed")
            await asyncio.sleep(_JANITOR_SECONDS)

    async def _expire_pending(self) -> None:
        while expired := await self._store.expired_pending(self.now_ms(), _PURGE_BATCH):
            await self._store.delete(expired)


def _new_media_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _content_type(value: str | None) -> str:
    """Content repository: the Content-Type header, ``application/octet-stream`` if unset."""
    value = (value or "").strip()
    if not value:
        return "application/octet-stream"
    if len(value) > 255 or not value.isprintable() or not value.isascii():
        raise MatrixError(Errcode.INVALID_PARAM, "Invalid Content-Type")
    return value


def _check_upload_name(name: str | None) -> None:
    if name is None:
        return
    if not name or len(name) > 255 or not name.isprintable() or "/" in name:
        raise MatrixError(Errcode.INVALID_PARAM, "Invalid filename")
