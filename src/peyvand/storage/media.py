"""Media repository metadata: one row per ``mxc://`` URI and one per generated thumbnail.

The bytes are content-addressed files (``peyvand.media.files``); rows name them by
``sha256``. A file may be removed only when no row of either table names it
(``unreferenced``), which the caller checks under the file's hash lock.

A thumbnail row cannot outlive its media row: ``media_thumbnails`` has a foreign key on
``media`` (``ON DELETE CASCADE``), ``add_thumbnail`` reports a vanished media row as "not
recorded", and ``delete`` locks the media rows before it collects their thumbnails' hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peyvand.storage.database import Database, Row, iter_chunks, placeholders
from peyvand.storage.errors import StorageError
from peyvand.types import ServerName, UserID

_CHUNK = 200

MediaKey = tuple[ServerName, str]
"""``(origin, media_id)``: the two parts of an ``mxc://`` URI."""


@dataclass(frozen=True, slots=True)
class MediaRow:
    origin: ServerName
    media_id: str
    user_id: UserID | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None
    created_ts: int
    uploaded_ts: int | None
    expires_ts: int | None
    last_access_ts: int
    quarantined_by: str | None

    @property
    def pending(self) -> bool:
        """Created with POST /media/v1/create and not uploaded to yet."""
        return self.sha256 is None


@dataclass(frozen=True, slots=True)
class ThumbnailRow:
    width: int
    height: int
    method: str
    content_type: str
    size: int
    sha256: str


_MEDIA_COLUMNS = (
    "origin, media_id, user_id, content_type, upload_name, size, sha256, created_ts,"
    " uploaded_ts, expires_ts, last_access_ts, quarantined_by"
)


def _media(row: Row) -> MediaRow:
    return MediaRow(
        origin=ServerName(row["origin"]),
        media_id=row["media_id"],
        user_id=UserID(row["user_id"]) if row["user_id"] is not None else None,
        content_type=row["content_type"],
        upload_name=row["upload_name"],
        size=row["size"],
        sha256=row["sha256"],
        created_ts=row["created_ts"],
        uploaded_ts=row["uploaded_ts"],
        expires_ts=row["expires_ts"],
        last_access_ts=row["last_access_ts"],
        quarantined_by=row["quarantined_by"],
    )


class MediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, origin: ServerName, media_id: str) -> MediaRow | None:
        row = await self._db.fetchrow(
            f"SELECT {_MEDIA_COLUMNS} FROM media WHERE origin = $1 AND media_id = $2",
            origin,
            media_id,
        )
        return _media(row) if row is not None else None

    async def add_pending(
        self, origin: ServerName, media_id: str, user_id: UserID, now: int, expires_ts: int
    ) -> None:
        """A media ID reserved by POST /media/v1/create, to be uploaded before ``expires_ts``."""
        await self._db.execute(
            "INSERT INTO media (origin, media_id, user_id, created_ts, expires_ts, last_access_ts)"
            " VALUES ($1, $2, $3, $4, $5, $4)",
            origin,
            media_id,
            user_id,
            now,
            expires_ts,
        )

    async def count_pending(self, user_id: UserID, now: int) -> int:
        """The user's reserved media IDs that are neither uploaded to nor expired."""
        count = await self._db.fetchval(
            "SELECT COUNT(*) FROM media WHERE user_id = $1 AND sha256 IS NULL AND expires_ts > $2",
            user_id,
            now,
        )
        return int(count)

    async def add_uploaded(self, row: MediaRow) -> None:
        """A complete upload (POST /media/v3/upload), in one statement."""
        await self._db.execute(
            f"INSERT INTO media ({_MEDIA_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            row.origin,
            row.media_id,
            row.user_id,
            row.content_type,
            row.upload_name,
            row.size,
            row.sha256,
            row.created_ts,
            row.uploaded_ts,
            row.expires_ts,
            row.last_access_ts,
            row.quarantined_by,
        )

    async def complete_pending(
        self,
        origin: ServerName,
        media_id: str,
        *,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
        now: int,
        quarantined_by: str | None,
    ) -> bool:
        """Fill in a pending media ID; False if it is no longer pending (already uploaded),
        has expired (``expires_ts <= now``: the janitor may be removing it) or is gone."""
        async with self._db.transaction() as txn:
            rows = await txn.fetch(
                "UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6,"
                " uploaded_ts = $7, last_access_ts = $7, expires_ts = NULL, quarantined_by = $8"
                " WHERE origin = $1 AND media_id = $2 AND sha256 IS NULL AND expires_ts > $7"
                " RETURNING media_id",
                origin,
                media_id,
                content_type,
                upload_name,
                size,
                sha256,
                now,
                quarantined_by,
            )
        return bool(rows)

    async def usage_of(self, user_id: UserID) -> int:
        """Bytes of media the user has uploaded (each upload counted, even if deduplicated)."""
        total = await self._db.fetchval(
            "SELECT COALESCE(SUM(size), 0) FROM media WHERE user_id = $1", user_id
        )
        return int(total)

    async def quarantined_hash(self, sha256: str) -> str | None:
        """Who quarantined some media with these bytes, if anyone did."""
        row = await self._db.fetchrow(
            "SELECT quarantined_by FROM media"
            " WHERE sha256 = $1 AND quarantined_by IS NOT NULL LIMIT 1",
            sha256,
        )
        return row["quarantined_by"] if row is not None else None

    async def set_quarantined(self, origin: ServerName, media_id: str, by: str | None) -> bool:
        """Quarantine (``by`` = the admin) or release (``None``) an item and every other
        media row with the same bytes (Synapse's "quarantine media by hash"): the same
        content is never served under one URI and hidden under another. A pending item (no
        bytes yet) is marked alone. False if the item is unknown."""
        async with self._db.transaction() as txn:
            row = await txn.fetchrow(
                "SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2",
                origin,
                media_id,
            )
            if row is None:
                return False
            if row["sha256"] is None:
                await txn.execute(
                    "UPDATE media SET quarantined_by = $3 WHERE origin = $1 AND media_id = $2",
                    origin,
                    media_id,
                    by,
                )
            else:
                await txn.execute(
                    "UPDATE media SET quarantined_by = $2 WHERE sha256 = $1", row["sha256"], by
                )
        return True

    async def get_thumbnail(
        self, origin: ServerName, media_id: str, width: int, height: int, method: str
    ) -> ThumbnailRow | None:
        row = await self._db.fetchrow(
            "SELECT width, height, method, content_type, size, sha256 FROM media_thumbnails"
            " WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4"
            " AND method = $5",
            origin,
            media_id,
            width,
            height,
            method,
        )
        if row is None:
            return None
        return ThumbnailRow(
            row["width"],
            row["height"],
            row["method"],
            row["content_type"],
            row["size"],
            row["sha256"],
        )

    async def add_thumbnail(
        self, origin: ServerName, media_id: str, thumbnail: ThumbnailRow
    ) -> bool:
        """Record a generated thumbnail; False if the media row is gone (deleted meanwhile)
        or the thumbnail was recorded already.

        ``WHERE EXISTS`` covers a media row deleted before the insert; the foreign key covers
        one whose delete commits while the insert waits for it (PostgreSQL, READ COMMITTED):
        the insert then fails, and a failure with the media row gone means "not recorded".
        """
        try:
            async with self._db.transaction() as txn:
                rows = await txn.fetch(
                    "INSERT INTO media_thumbnails"
                    " (origin, media_id, width, height, method, content_type, size, sha256)"
                    " SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS"
                    " (SELECT 1 FROM media WHERE origin = $1 AND media_id = $2)"
                    " ON CONFLICT DO NOTHING RETURNING media_id",
                    origin,
                    media_id,
                    thumbnail.width,
                    thumbnail.height,
                    thumbnail.method,
                    thumbnail.content_type,
                    thumbnail.size,
                    thumbnail.sha256,
                )
        except StorageError:
            # The drivers report a foreign-key violation as a plain StorageError; tell it
            # from other failures by looking again (a lost connection fails here too).
            if await self.get(origin, media_id) is None:
                return False
            raise
        return bool(rows)

    async def touch(self, accessed: Sequence[tuple[str, str, int]]) -> None:
        """Record ``(origin, media_id, ts)`` downloads, in one batch."""
        await self._db.executemany(
            "UPDATE media SET last_access_ts = $3"
            " WHERE origin = $1 AND media_id = $2 AND last_access_ts < $3",
            accessed,
        )

    async def delete(
        self, keys: Sequence[MediaKey], *, unless_named: bool = False
    ) -> tuple[int, set[str]]:
        """Delete these media rows and their thumbnails in one transaction: the number of
        media rows deleted and the hashes of the files the rows named (candidates for
        removal). ``unless_named``: leave those an event names (``event_media``), checked
        in the same transaction (a purge deleting what its events alone used must not
        take media a message stored since then shows).

        On PostgreSQL the media rows are locked first (``FOR UPDATE``, which conflicts with
        the foreign-key check of a concurrent ``add_thumbnail``): a thumbnail committed
        before the lock is seen by the thumbnail delete (so its hash is returned), one
        inserted after it fails. SQLite serialises writers, so no lock is needed there."""
        by_origin: dict[ServerName, list[str]] = {}
        for origin, media_id in keys:
            by_origin.setdefault(origin, []).append(media_id)
        hashes: set[str] = set()
        deleted = 0
        async with self._db.transaction() as txn:
            for origin, media_ids in by_origin.items():
                async for chunk in iter_chunks(media_ids, _CHUNK):
                    if unless_named:
                        named = await txn.fetch(
                            "SELECT media_id FROM event_media WHERE origin = $1"
                            f" AND media_id IN ({placeholders(len(chunk), start=2)})",
                            origin,
                            *chunk,
                        )
                        kept = {row["media_id"] for row in named}
                        chunk = [m for m in chunk if m not in kept]
                        if not chunk:
                            continue
                    if self._db.dialect == "postgres":
                        await txn.fetch(
                            "SELECT 1 FROM media WHERE origin = $1"
                            f" AND media_id IN ({placeholders(len(chunk), start=2)})"
                            " ORDER BY media_id FOR UPDATE",
                            origin,
                            *chunk,
                        )
                    for table in ("media_thumbnails", "media"):
                        rows = await txn.fetch(
                            f"DELETE FROM {table} WHERE origin = $1"
                            f" AND media_id IN ({placeholders(len(chunk), start=2)})"
                            " RETURNING sha256",
                            origin,
                            *chunk,
                        )
                        hashes.update(row["sha256"] for row in rows if row["sha256"])
                        if table == "media":
                            deleted += len(rows)
        return deleted, hashes

    async def unreferenced(self, hashes: Sequence[str]) -> set[str]:
        """Those of ``hashes`` that no media or thumbnail row names."""
        unused = set(hashes)
        async for chunk in iter_chunks(list(hashes), _CHUNK):
            marks = placeholders(len(chunk))
            rows = await self._db.fetch(
                f"SELECT sha256 FROM media WHERE sha256 IN ({marks})"
                f" UNION SELECT sha256 FROM media_thumbnails WHERE sha256 IN ({marks})",
                *chunk,
            )
            unused.difference_update(row["sha256"] for row in rows)
        return unused

    async def not_accessed_since(
        self,
        before_ts: int,
        *,
        local_origin: ServerName,
        local: bool,
        keep_profile_media: bool,
        limit: int,
    ) -> list[MediaKey]:
        """Uploaded (or cached) media last downloaded before ``before_ts``: local media when
        ``local``, else the remote cache. Quarantined media is kept (evidence), and so are
        avatars in users' profiles when ``keep_profile_media``."""
        origin_test = "origin = $2" if local else "origin <> $2"
        keep_profiles = (
            " AND NOT EXISTS (SELECT 1 FROM users"
            " WHERE users.avatar_url = 'mxc://' || media.origin || '/' || media.media_id)"
            if keep_profile_media
            else ""
        )
        rows = await self._db.fetch(
            "SELECT origin, media_id FROM media"
            f" WHERE last_access_ts < $1 AND {origin_test} AND sha256 IS NOT NULL"
            f" AND quarantined_by IS NULL{keep_profiles}"
            " ORDER BY last_access_ts LIMIT $3",
            before_ts,
            local_origin,
            limit,
        )
        return [(ServerName(row["origin"]), row["media_id"]) for row in rows]

    async def expire_pending(self, now: int, limit: int) -> list[MediaKey]:
        """Delete up to ``limit`` reserved media IDs whose upload time ran out; their keys.

        One statement that re-checks "still pending and expired" on the rows it deletes: a
        reservation completed meanwhile (``complete_pending`` requires ``expires_ts > now``,
        so only before it expired) is never deleted. Pending rows have no thumbnails and no
        file."""
        async with self._db.transaction() as txn:
            rows = await txn.fetch(
                "DELETE FROM media WHERE sha256 IS NULL AND expires_ts <= $1"
                " AND (origin, media_id) IN (SELECT origin, media_id FROM media"
                " WHERE sha256 IS NULL AND expires_ts <= $1 LIMIT $2)"
                " RETURNING origin, media_id",
                now,
                limit,
            )
        return [(ServerName(row["origin"]), row["media_id"]) for row in rows]
