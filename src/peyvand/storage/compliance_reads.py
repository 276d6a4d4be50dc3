"""Read-only queries for compliance exports (docs/compliance.md, "Compliance export").

Everything that can grow with history streams in bounded batches, paged by key (never
``OFFSET``), so an export of a large room or a prolific user holds one batch at a time.
Nothing here writes.

Time ranges include both ends, ``since_ts <= origin_server_ts <= until_ts`` (milliseconds,
as for legal holds); ``None`` leaves that end open.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import orjson

from peyvand.storage.database import Database, Row, placeholders
from peyvand.storage.profile_fields import ProfileFieldStore
from peyvand.types import JsonDict, ServerName, UserID

MediaKey = tuple[str, str]
"""``(origin, media_id)``: the two parts of an ``mxc://`` URI."""

DEFAULT_BATCH = 500

_MIN_BIGINT = -(2**63)
_MAX_BIGINT = 2**63 - 1
_IN_LIST_CHUNK = 200

_EVENT_COLUMNS = (
    "e.event_id, e.room_id, e.type, e.state_key, e.sender, e.origin_server_ts,"
    " e.stream_ordering, e.pdu, e.redacted_by, r.room_version"
)
_MEDIA_COLUMNS = "origin, media_id, content_type, upload_name, size, sha256, created_ts"


@dataclass(frozen=True, slots=True)
class ExportEventRow:
    """One event as stored: the PDU verbatim (``pdu``), whether it was redacted and the
    room's version (None if the room has no row)."""

    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    origin_server_ts: int
    stream_ordering: int
    pdu: JsonDict
    redacted_by: str | None
    room_version: str | None


@dataclass(frozen=True, slots=True)
class ProfileRow:
    user_id: str
    displayname: str | None
    avatar_url: str | None
    created_ts: int
    is_admin: bool
    deactivated: bool


@dataclass(frozen=True, slots=True)
class ExportDeviceRow:
    """A device without its access tokens (they live in another table, never read here)."""

    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


@dataclass(frozen=True, slots=True)
class ExportAccountDataRow:
    """``room_id`` is ``''`` for global account data."""

    room_id: str
    type: str
    content: JsonDict


@dataclass(frozen=True, slots=True)
class ExportMediaRow:
    """``sha256`` (and ``size``) are None while an asynchronous upload is pending."""

    origin: ServerName
    media_id: str
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None
    created_ts: int


class ComplianceReads:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._profile_fields = ProfileFieldStore(db)

    # -- rooms and events ----------------------------------------------------------------

    async def max_stream_ordering(self) -> int:
        """The newest event's position: an export reads up to the position it started at,
        so its count and its contents agree while new events arrive."""
        value = await self._db.fetchval("SELECT MAX(stream_ordering) FROM events")
        return _MIN_BIGINT if value is None else int(value)

    async def room_exists(self, room_id: str) -> bool:
        found = await self._db.fetchval("SELECT 1 FROM rooms WHERE room_id = $1", room_id)
        return found is not None

    async def count_room_events(
        self, room_id: str, since_ts: int | None, until_ts: int | None, up_to_stream: int
    ) -> int:
        value = await self._db.fetchval(
            "SELECT COUNT(*) FROM events WHERE room_id = $1"
            " AND origin_server_ts >= $2 AND origin_server_ts <= $3 AND stream_ordering <= $4",
            room_id,
            *_range(since_ts, until_ts),
            up_to_stream,
        )
        return int(value or 0)

    async def room_events(
        self,
        room_id: str,
        since_ts: int | None,
        until_ts: int | None,
        up_to_stream: int,
        batch: int = DEFAULT_BATCH,
    ) -> AsyncGenerator[list[ExportEventRow], None]:
        """The room's events sent in the range, in stream order up to ``up_to_stream``,
        ``batch`` at a time."""
        since, until = _range(since_ts, until_ts)
        after = _MIN_BIGINT
        while True:
            rows = await self._db.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events AS e"
                " LEFT JOIN rooms AS r ON r.room_id = e.room_id"
                " WHERE e.room_id = $1 AND e.stream_ordering > $2"
                " AND e.origin_server_ts >= $3 AND e.origin_server_ts <= $4"
                " AND e.stream_ordering <= $5 ORDER BY e.stream_ordering LIMIT $6",
                room_id,
                after,
                since,
                until,
                up_to_stream,
                batch,
            )
            if rows:
                events = [_event(row) for row in rows]
                after = events[-1].stream_ordering
                yield events
            if len(rows) < batch:
                return

    async def count_user_events(
        self, user_id: str, since_ts: int | None, until_ts: int | None, up_to_stream: int
    ) -> int:
        value = await self._db.fetchval(
            "SELECT COUNT(*) FROM events WHERE sender = $1"
            " AND origin_server_ts >= $2 AND origin_server_ts <= $3 AND stream_ordering <= $4",
            user_id,
            *_range(since_ts, until_ts),
            up_to_stream,
        )
        return int(value or 0)

    async def user_events(
        self,
        user_id: str,
        since_ts: int | None,
        until_ts: int | None,
        up_to_stream: int,
        batch: int = DEFAULT_BATCH,
    ) -> AsyncGenerator[list[ExportEventRow], None]:
        """Every event ``user_id`` sent in the range, in any room, in stream order up to
        ``up_to_stream``."""
        since, until = _range(since_ts, until_ts)
        after = _MIN_BIGINT
        while True:
            rows = await self._db.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events AS e"
                " LEFT JOIN rooms AS r ON r.room_id = e.room_id"
                " WHERE e.sender = $1 AND e.stream_ordering > $2"
                " AND e.origin_server_ts >= $3 AND e.origin_server_ts <= $4"
                " AND e.stream_ordering <= $5 ORDER BY e.stream_ordering LIMIT $6",
                user_id,
                after,
                since,
                until,
                up_to_stream,
                batch,
            )
            if rows:
                events = [_event(row) for row in rows]
                after = events[-1].stream_ordering
                yield events
            if len(rows) < batch:
                return

    # -- the user's own data -------------------------------------------------------------

    async def profile_fields(self, user_id: str) -> JsonDict:
        """The custom fields of the user's profile (``{}`` if none)."""
        return await self._profile_fields.get_fields(UserID(user_id))

    async def profile(self, user_id: str) -> ProfileRow | None:
        row = await self._db.fetchrow(
            "SELECT user_id, displayname, avatar_url, created_ts, is_admin, deactivated"
            " FROM users WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return None
        return ProfileRow(
            user_id=row["user_id"],
            displayname=row["displayname"],
            avatar_url=row["avatar_url"],
            created_ts=int(row["created_ts"]),
            is_admin=bool(row["is_admin"]),
            deactivated=bool(row["deactivated"]),
        )

    async def devices(
        self, user_id: str, batch: int = DEFAULT_BATCH
    ) -> AsyncGenerator[list[ExportDeviceRow], None]:
        """The user's devices, by device ID, ``batch`` at a time."""
        after = ""
        while True:
            rows = await self._db.fetch(
                "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
                " WHERE user_id = $1 AND device_id > $2 ORDER BY device_id LIMIT $3",
                user_id,
                after,
                batch,
            )
            if rows:
                devices = [
                    ExportDeviceRow(
                        r["device_id"], r["display_name"], r["last_seen_ts"], r["last_seen_ip"]
                    )
                    for r in rows
                ]
                after = devices[-1].device_id
                yield devices
            if len(rows) < batch:
                return

    async def account_data(
        self, user_id: str, batch: int = DEFAULT_BATCH
    ) -> AsyncGenerator[list[ExportAccountDataRow], None]:
        """The user's account data (global: room ``''``), in the order it last changed."""
        after = -1
        while True:
            # stream_id is unique (account_data_stream), so it pages without ties.
            rows = await self._db.fetch(
                "SELECT room_id, type, content, stream_id FROM account_data"
                " WHERE user_id = $1 AND stream_id > $2 ORDER BY stream_id LIMIT $3",
                user_id,
                after,
                batch,
            )
            if rows:
                after = int(rows[-1]["stream_id"])
                yield [
                    ExportAccountDataRow(r["room_id"], r["type"], orjson.loads(r["content"]))
                    for r in rows
                ]
            if len(rows) < batch:
                return

    async def media_uploaded_by(
        self, user_id: str, batch: int = DEFAULT_BATCH
    ) -> AsyncGenerator[list[ExportMediaRow], None]:
        """The media the user uploaded (pending uploads included), by media ID."""
        after = ("", "")
        while True:
            rows = await self._db.fetch(
                f"SELECT {_MEDIA_COLUMNS} FROM media WHERE user_id = $1"
                " AND (origin > $2 OR (origin = $2 AND media_id > $3))"
                " ORDER BY origin, media_id LIMIT $4",
                user_id,
                after[0],
                after[1],
                batch,
            )
            if rows:
                media = [_media(row) for row in rows]
                after = (media[-1].origin, media[-1].media_id)
                yield media
            if len(rows) < batch:
                return

    async def media_by_keys(self, keys: Sequence[MediaKey]) -> dict[MediaKey, ExportMediaRow]:
        """The rows of those of ``keys`` this server holds (local or cached remote)."""
        found: dict[MediaKey, ExportMediaRow] = {}
        by_origin: dict[str, list[str]] = {}
        for origin, media_id in dict.fromkeys(keys):
            by_origin.setdefault(origin, []).append(media_id)
        for origin, media_ids in by_origin.items():
            for start in range(0, len(media_ids), _IN_LIST_CHUNK):
                chunk = media_ids[start : start + _IN_LIST_CHUNK]
                rows = await self._db.fetch(
                    f"SELECT {_MEDIA_COLUMNS} FROM media WHERE origin = $1"
                    f" AND media_id IN ({placeholders(len(chunk), start=2)})",
                    origin,
                    *chunk,
                )
                for row in rows:
                    media = _media(row)
                    found[(media.origin, media.media_id)] = media
        return found


def _range(since_ts: int | None, until_ts: int | None) -> tuple[int, int]:
    return (
        _MIN_BIGINT if since_ts is None else since_ts,
        _MAX_BIGINT if until_ts is None else until_ts,
    )


def _event(row: Row) -> ExportEventRow:
    return ExportEventRow(
        event_id=row["event_id"],
        room_id=row["room_id"],
        type=row["type"],
        state_key=row["state_key"],
        sender=row["sender"],
        origin_server_ts=int(row["origin_server_ts"]),
        stream_ordering=int(row["stream_ordering"]),
        pdu=orjson.loads(row["pdu"]),
        redacted_by=row["redacted_by"],
        room_version=row["room_version"],
    )


def _media(row: Row) -> ExportMediaRow:
    return ExportMediaRow(
        origin=ServerName(row["origin"]),
        media_id=row["media_id"],
        content_type=row["content_type"],
        upload_name=row["upload_name"],
        size=row["size"],
        sha256=row["sha256"],
        created_ts=int(row["created_ts"]),
    )
