"""Asynchronous uploads (Client-Server API, "Content repository", ``POST /media/v1/create``).

A media ID is reserved for a later upload to it. A download of a reserved ID waits for its
upload (``timeout_ms``); the upload, a delete and the expiry of the reservation wake the
waiters, which then read the row again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.requester import Requester
from peyvand.services.media.content import MediaContent, new_media_id
from peyvand.storage.media import MediaKey, MediaRow

_MAX_TIMEOUT_MS: Final = 60_000
_DEFAULT_TIMEOUT_MS: Final = 20_000
_EXPIRE_BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class Created:
    content_uri: str
    unused_expires_at: int


class Reservations:
    def __init__(self, config: MediaConfig, content: MediaContent) -> None:
        self._config = config
        self._content = content
        # Downloads waiting for a reserved ID's upload: the event and how many wait on it.
        self._waiters: dict[MediaKey, tuple[asyncio.Event, int]] = {}

    async def create(self, requester: Requester) -> Created:
        """POST /media/v1/create: reserve a media ID for a later upload."""
        now = self._content.now_ms()
        pending = await self._content.store.count_pending(requester.user_id, now)
        if pending >= self._config.max_pending_uploads:
            raise MatrixError(
                Errcode.LIMIT_EXCEEDED,
                "Too many pending media uploads",
                retry_after_ms=60_000,
            )
        media_id = new_media_id()
        expires_ts = now + self._config.pending_upload_lifetime * 1000
        await self._content.store.add_pending(
            self._content.server_name, media_id, requester.user_id, now, expires_ts
        )
        return Created(f"mxc://{self._content.server_name}/{media_id}", expires_ts)

    async def wait_for_upload(self, row: MediaRow, timeout_ms: int | None) -> MediaRow | None:
        """Content repository, ``timeout_ms``: wait for a reserved ID's content to arrive;
        the uploaded row, or None if the reservation expired or was deleted."""
        key = (row.origin, row.media_id)
        if (row.expires_ts or 0) <= self._content.now_ms():
            return None
        wait_ms = _DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
        wait_ms = max(0, min(wait_ms, _MAX_TIMEOUT_MS))
        with self._upload_waiter(key) as uploaded:
            # Read again now that the waiter is registered: an upload that completed after
            # the first read is seen here, and one that completes from now on sets the event.
            current = await self._content.store.get(*key)
            if current is not None and current.pending and wait_ms:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_ms / 1000):
                        await uploaded.wait()
                current = await self._content.store.get(*key)
        if current is not None and current.pending:
            if (current.expires_ts or 0) <= self._content.now_ms():
                return None
            raise MatrixError(Errcode.NOT_YET_UPLOADED, "Content has not yet been uploaded")
        return current

    @contextlib.contextmanager
    def _upload_waiter(self, key: MediaKey) -> Iterator[asyncio.Event]:
        """The event set when ``key``'s reservation is uploaded to, deleted or expired;
        shared by the waiters of one key and dropped when the last of them leaves."""
        event, waiting = self._waiters.get(key, (asyncio.Event(), 0))
        self._waiters[key] = (event, waiting + 1)
        try:
            yield event
        finally:
            event, waiting = self._waiters[key]
            if waiting == 1:
                del self._waiters[key]
            else:
                self._waiters[key] = (event, waiting - 1)

    def wake(self, keys: Iterable[MediaKey]) -> None:
        """Wake the downloads waiting for these reservations (they read the row again)."""
        for key in keys:
            entry = self._waiters.get(key)
            if entry is not None:
                entry[0].set()

    async def expire_pending(self) -> None:
        """Delete expired reservations (rows only: they have no file) and wake their
        waiters, which then answer 404."""
        while expired := await self._content.store.expire_pending(
            self._content.now_ms(), _EXPIRE_BATCH
        ):
            self.wake(expired)
