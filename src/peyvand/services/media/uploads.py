"""Uploads (Client-Server API, "Content repository": ``POST /media/v3/upload``, and
``PUT /media/v3/upload/{serverName}/{mediaId}`` for an ID reserved with ``/create``).

Uploads stream into a temporary file while being hashed and counted, so memory stays flat
whatever the size; only a complete upload within the limits becomes a file and a row. The
quota counts a user's stored uploads plus the bytes of their uploads still streaming, and is
checked once more, under a per-user lock, just before the row is written: concurrent uploads
cannot exceed it together.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TypeVar

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.keyed_locks import KeyedLocks
from peyvand.media.files import WrittenFile
from peyvand.services.accounts.requester import Requester
from peyvand.services.media.content import MediaContent, new_media_id, storage_errors
from peyvand.services.media.reservations import Reservations
from peyvand.types import ServerName, UserID

_T = TypeVar("_T")


class _InFlight:
    """The bytes of one upload while it streams in, counted in the per-user total
    of bytes in flight until ``release``."""

    def __init__(self, totals: dict[UserID, int], user_id: UserID) -> None:
        self._totals = totals
        self.user_id = user_id
        self._size = 0

    @property
    def user_total(self) -> int:
        """Bytes in flight for the user, over all their uploads (this one included)."""
        return self._totals.get(self.user_id, 0)

    def add(self, size: int) -> None:
        self._size += size
        self._totals[self.user_id] = self.user_total + size

    def release(self) -> None:
        """Stop counting this upload's bytes (idempotent)."""
        left = self.user_total - self._size
        self._size = 0
        if left:
            self._totals[self.user_id] = left
        else:
            self._totals.pop(self.user_id, None)


class Uploads:
    def __init__(
        self,
        config: MediaConfig,
        content: MediaContent,
        *,
        reservations: Reservations,
        admin_contact: str | None,
    ) -> None:
        self._config = config
        self._content = content
        self._reservations = reservations
        self._admin_contact = admin_contact
        # Per user ID: the final quota check and the row it allows happen under this lock.
        self._quota_locks = KeyedLocks()
        # Per user: bytes of uploads still streaming in (not yet counted by ``usage_of``).
        self._in_flight: dict[UserID, int] = {}

    def config_json(self) -> dict[str, int]:
        """GET /media/config."""
        return {"m.upload.size": self._config.max_upload_size}

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
        user_id = requester.user_id
        media_id = new_media_id()
        add = functools.partial(
            self._content.add,
            self._content.server_name,
            media_id,
            user_id,
            content_type,
            upload_name,
        )
        await self._store_within_quota(user_id, body, content_length, add)
        return f"mxc://{self._content.server_name}/{media_id}"

    async def upload_to(
        self,
        requester: Requester,
        origin: ServerName,
        media_id: str,
        body: AsyncIterable[bytes],
        *,
        content_length: int | None,
        content_type: str | None,
        upload_name: str | None,
    ) -> None:
        """PUT /media/v3/upload/{serverName}/{mediaId}: the content of a reserved ID.

        A reservation that expires (or is deleted) before its upload completes is gone:
        404 M_NOT_FOUND, and the bytes are not kept."""
        content_type = _content_type(content_type)
        _check_upload_name(upload_name)
        user_id = requester.user_id
        row = (
            await self._content.store.get(origin, media_id)
            if origin == self._content.server_name
            else None
        )
        if row is None or (row.pending and (row.expires_ts or 0) <= self._content.now_ms()):
            raise MatrixError(Errcode.NOT_FOUND, "Unknown media ID")
        if row.user_id != user_id:
            raise MatrixError(Errcode.FORBIDDEN, "This media ID belongs to another user")
        if not row.pending:
            raise MatrixError(Errcode.CANNOT_OVERWRITE_MEDIA, "Media already uploaded")

        async def complete(written: WrittenFile) -> bool:
            async with self._content.locks.hold(written.sha256):
                quarantined_by = await self._content.store.quarantined_hash(written.sha256)
                record = functools.partial(
                    self._content.store.complete_pending,
                    origin,
                    media_id,
                    content_type=content_type,
                    upload_name=upload_name,
                    size=written.size,
                    sha256=written.sha256,
                    now=self._content.now_ms(),
                    quarantined_by=quarantined_by,
                )
                return await self._content.adopt(written, record)

        completed = await self._store_within_quota(user_id, body, content_length, complete)
        if not completed:
            current = await self._content.store.get(origin, media_id)
            if current is None or current.pending:  # expired meanwhile, or deleted
                raise MatrixError(Errcode.NOT_FOUND, "Unknown media ID")
            raise MatrixError(Errcode.CANNOT_OVERWRITE_MEDIA, "Media already uploaded")
        self._reservations.wake([(origin, media_id)])

    async def store_bytes(self, data: bytes, content_type: str, upload_name: str | None) -> str:
        """Store content the server fetched itself (URL preview images); its mxc URI. The
        item has no owner (``user_id`` NULL), so it counts against nobody's quota."""
        with storage_errors():
            written = await self._content.files.write_bytes(data)
        media_id = new_media_id()
        try:
            await self._content.add(
                self._content.server_name, media_id, None, content_type, upload_name, written
            )
        finally:
            await self._content.files.discard(written)
        return f"mxc://{self._content.server_name}/{media_id}"

    async def _store_within_quota(
        self,
        user_id: UserID,
        body: AsyncIterable[bytes],
        content_length: int | None,
        store: Callable[[WrittenFile], Awaitable[_T]],
    ) -> _T:
        """Receive ``body`` (``_receive``), then ``store`` it under the user's quota lock
        once the final quota check passed; what ``store`` returned. The temporary file is
        discarded and the bytes in flight released whatever happens."""
        in_flight = _InFlight(self._in_flight, user_id)
        try:
            written = await self._receive(in_flight, body, content_length)
            try:
                async with self._quota_locks.hold(user_id):
                    await self._check_quota(user_id, written.size)
                    return await store(written)
            finally:
                await self._content.files.discard(written)
        finally:
            in_flight.release()

    async def _receive(
        self, in_flight: _InFlight, body: AsyncIterable[bytes], content_length: int | None
    ) -> WrittenFile:
        """Stream ``body`` into a temporary file, refusing it as soon as it passes the
        upload size limit (413) or the user's quota, which counts the user's other uploads
        in flight too. The bytes stay counted in ``in_flight`` until the caller releases
        them (after the final check, ``_check_quota``, and the row)."""
        quota = self._config.user_quota
        usage = 0
        if quota is not None:
            usage = await self._content.store.usage_of(in_flight.user_id)
            if usage + in_flight.user_total + (content_length or 0) > quota:
                raise self._quota_exceeded()
        with storage_errors():
            writer = await self._content.files.open_writer()
        try:
            async for chunk in body:
                size = writer.size + len(chunk)
                if size > self._config.max_upload_size:
                    raise self._too_large()
                if quota is not None and usage + in_flight.user_total + len(chunk) > quota:
                    raise self._quota_exceeded()
                in_flight.add(len(chunk))
                with storage_errors():
                    await writer.write(chunk)
            with storage_errors():
                return await writer.finish()
        except BaseException:
            # Released before any await: the user's other uploads must not be refused for
            # bytes that will never be stored.
            in_flight.release()
            await writer.discard()
            raise

    async def _check_quota(self, user_id: UserID, size: int) -> None:
        """The final check, under the user's quota lock: the stored uploads and this one
        (the streaming check may have let concurrent uploads through together)."""
        quota = self._config.user_quota
        if quota is not None and await self._content.store.usage_of(user_id) + size > quota:
            raise self._quota_exceeded()

    def _quota_exceeded(self) -> MatrixError:
        error = MatrixError(Errcode.RESOURCE_LIMIT_EXCEEDED, "Media quota exceeded")
        if self._admin_contact:
            error.extra["admin_contact"] = self._admin_contact
        return error

    def _too_large(self) -> MatrixError:
        limit = self._config.max_upload_size
        return MatrixError(Errcode.TOO_LARGE, f"Cannot upload files larger than {limit} bytes")


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
