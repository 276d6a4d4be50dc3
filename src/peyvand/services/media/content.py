"""Media files and the rows that name them, kept in agreement.

Files are content-addressed and shared (``peyvand.media.files``); each file operation and
its row change happen under the file's hash lock, so the database and the media directory
agree after every step, including deletes and purges. A row that cannot be written after
its file was committed (a database error) takes the file away again; a crash at that moment
leaves an unnamed file, which the periodic orphan sweep removes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import secrets
import string
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

from peyvand.errors import Errcode, MatrixError
from peyvand.keyed_locks import KeyedLocks
from peyvand.media.files import MediaFiles, WrittenFile
from peyvand.storage.media import MediaRow, MediaStore
from peyvand.types import ServerName, UserID

logger = logging.getLogger(__name__)

_ID_ALPHABET: Final = string.ascii_letters + string.digits


class MediaContent:
    """This server's media content: the rows (``store``), the files (``files``) and the
    hash locks that keep them in agreement. Commits files together with the rows naming
    them, and removes files no row names."""

    def __init__(
        self,
        server_name: ServerName,
        store: MediaStore,
        files: MediaFiles,
        clock: Callable[[], float],
    ) -> None:
        # Per file hash: every file operation and the row change that goes with it.
        self.locks = KeyedLocks()
        self.server_name = server_name
        self.store = store
        self.files = files
        self._clock = clock

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def add(
        self,
        origin: ServerName,
        media_id: str,
        user_id: UserID | None,
        content_type: str,
        upload_name: str | None,
        written: WrittenFile,
    ) -> MediaRow:
        """Commit ``written`` as the content of a new media item and record its row (under
        the file's hash lock; quarantined if identical bytes are); the row. The caller
        discards ``written`` afterwards."""
        async with self.locks.hold(written.sha256):
            now = self.now_ms()
            row = MediaRow(
                origin=origin,
                media_id=media_id,
                user_id=user_id,
                content_type=content_type,
                upload_name=upload_name,
                size=written.size,
                sha256=written.sha256,
                created_ts=now,
                uploaded_ts=now,
                expires_ts=None,
                last_access_ts=now,
                quarantined_by=await self.store.quarantined_hash(written.sha256),
            )
            await self.adopt(written, functools.partial(self._add_row, row))
        return row

    async def _add_row(self, row: MediaRow) -> bool:
        await self.store.add_uploaded(row)
        return True

    async def adopt(self, written: WrittenFile, record: Callable[[], Awaitable[bool]]) -> bool:
        """Commit ``written`` and ``record`` the row that names it (the caller holds the
        hash lock); what ``record`` returned.

        When the row is not recorded (False) or recording fails (a database error), the file
        is removed again unless another row names it. A cancelled ``record`` may still have
        written its row, so its file is left for the orphan sweep instead: an unnamed file
        is harmless, a row without its file is not.
        """
        with storage_errors():
            await self.files.commit(written)
        try:
            recorded = await record()
        except Exception:
            try:
                await self.remove_if_unreferenced(written.sha256)
            except Exception:
                logger.exception(
                    "media file %s may stay without a row until the orphan sweep",
                    written.sha256,
                )
            raise
        if not recorded:
            await self.remove_if_unreferenced(written.sha256)
        return recorded

    async def remove_if_unreferenced(self, sha256: str) -> bool:
        """Remove the file if no row names it; whether it was removed. Caller holds the
        hash lock."""
        if await self.store.unreferenced([sha256]):
            await self.files.remove(sha256)
            return True
        return False


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """A failing media disk (full, read-only, I/O error) as a clean 500 with a warning in the
    log, not an unhandled error with a traceback per request."""
    try:
        yield
    except OSError as exc:
        logger.warning("writing media failed: %s", exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            message = "The server's media storage is full"
        else:
            message = "The server could not store the media"
        raise MatrixError(Errcode.UNKNOWN, message, status=500) from None


def new_media_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))
