"""Deleting history: retention, disappearing messages, redacted content and erasure
(docs/compliance.md).

Two operations, each one transaction per batch:

- ``purge``: the event leaves the timeline. Its row moves to ``event_outliers`` with
  status ``purged`` and its *redacted* PDU (no content beyond what the authorization
  rules need, hashes and signatures intact), so the room's DAG stays whole: later events
  still name it in ``prev_events``/``auth_events``, other servers can still be answered,
  and a copy arriving again over federation is known and dropped. Clients never see
  outliers. Its notifications, expiry, media references and search index row go with it.
- ``rewrite_content``: the event stays in the timeline but its stored PDU becomes the
  redacted form (redacted content purge, erasure); its search index row is deleted and,
  as for a redaction, it relates to nothing any more (no child, no thread reply).

Neither touches an event that is part of its room's current state (the room's name or
a member's membership is state, not history). Which events a legal hold covers is the
caller's business: it passes only the others. Both return the media no remaining event
names, for the caller to delete (files are not the database's business).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from peyvand.events.pdu import Pdu
from peyvand.events.redaction import redact
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.storage.database import Connection, Database, Row, placeholders
from peyvand.storage.push_actions import forget_events
from peyvand.storage.search import unindex_events
from peyvand.storage.stream_positions import record_purged_events
from peyvand.storage.threads import forget_events as forget_thread_events
from peyvand.types import EventID

__all__ = ["PurgeCandidate", "PurgeResult", "PurgeStore"]

# Media keys per statement (two parameters each: well within every backend's limit).
_CHUNK = 500
_CANDIDATE_COLUMNS = "e.event_id, e.room_id, e.sender, e.origin_server_ts, e.stream_ordering"
# Not the room's current state (messages have no state_key: never current state).
_NOT_CURRENT_STATE = (
    "NOT EXISTS (SELECT 1 FROM current_state c WHERE c.room_id = e.room_id"
    " AND c.type = e.type AND c.state_key = e.state_key AND c.event_id = e.event_id)"
)


@dataclass(frozen=True, slots=True)
class PurgeCandidate:
    """A timeline event a purge may remove or rewrite."""

    event_id: EventID
    room_id: str
    sender: str
    origin_server_ts: int
    stream_ordering: int


@dataclass(frozen=True, slots=True)
class PurgeResult:
    # The events purged or rewritten (those still in current state are left alone).
    event_ids: tuple[EventID, ...]
    # (origin, media_id) of media no remaining event names.
    unreferenced_media: tuple[tuple[str, str], ...]


def _candidate(row: Row) -> PurgeCandidate:
    return PurgeCandidate(
        EventID(row["event_id"]),
        row["room_id"],
        row["sender"],
        int(row["origin_server_ts"]),
        int(row["stream_ordering"]),
    )


class PurgeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- finding what to delete ----------------------------------------------------------

    async def room_ids(self) -> list[str]:
        return [r["room_id"] for r in await self._db.fetch("SELECT room_id FROM rooms")]

    async def expired_in_room(
        self, room_id: str, before_ts: int, after_stream: int | None, limit: int
    ) -> list[PurgeCandidate]:
        """Timeline events of ``room_id`` sent before ``before_ts``, not in current state,
        after stream position ``after_stream`` (None: from the start), oldest first."""
        rows = await self._db.fetch(
            f"SELECT {_CANDIDATE_COLUMNS} FROM events e"
            " WHERE e.room_id = $1 AND e.origin_server_ts < $2 AND e.stream_ordering > $3"
            f" AND {_NOT_CURRENT_STATE} ORDER BY e.stream_ordering LIMIT $4",
            room_id,
            before_ts,
            _from(after_stream),
            limit,
        )
        return [_candidate(r) for r in rows]

    async def expired_outliers_in_room(
        self, room_id: str, before_ts: int, after_event_id: str | None, limit: int
    ) -> tuple[list[PurgeCandidate], str | None]:
        """Events of ``room_id`` held outside the timeline (outliers, rejected and
        soft-failed events) sent before ``before_ts`` whose content is still stored and
        that are not current state, among the next ``limit`` by event ID after
        ``after_event_id``; and the cursor for the next call (None: done)."""
        rows = await self._db.fetch(
            "SELECT o.event_id, o.pdu FROM event_outliers o"
            " WHERE o.room_id = $1 AND o.status <> 'purged' AND o.content_purged_ts IS NULL"
            " AND o.event_id > $2"
            " AND NOT EXISTS (SELECT 1 FROM current_state c WHERE c.event_id = o.event_id)"
            " ORDER BY o.event_id LIMIT $3",
            room_id,
            after_event_id or "",
            limit,
        )
        found = []
        for row in rows:
            pdu = orjson.loads(row["pdu"])
            ts, sender = pdu.get("origin_server_ts"), pdu.get("sender")
            if isinstance(ts, int) and ts < before_ts and isinstance(sender, str):
                found.append(PurgeCandidate(EventID(row["event_id"]), room_id, sender, ts, 0))
        cursor = rows[-1]["event_id"] if len(rows) == limit else None
        return found, cursor

    async def expired_disappearing(
        self, now_ts: int, limit: int
    ) -> tuple[list[PurgeCandidate], list[EventID]]:
        """Events whose disappearing-message timer ran out by ``now_ts``, oldest expiry
        first, and the expiry rows whose events are gone already (to drop)."""
        rows = await self._db.fetch(
            f"SELECT x.event_id AS expiring, {_CANDIDATE_COLUMNS} FROM event_expiry x"
            " LEFT JOIN events e ON e.event_id = x.event_id"
            " WHERE x.expires_ts <= $1 ORDER BY x.expires_ts LIMIT $2",
            now_ts,
            limit,
        )
        gone = [EventID(r["expiring"]) for r in rows if r["event_id"] is None]
        return [_candidate(r) for r in rows if r["event_id"] is not None], gone

    async def next_expiry(self) -> int | None:
        """The earliest disappearing-message expiry, if any."""
        value = await self._db.fetchval("SELECT MIN(expires_ts) FROM event_expiry")
        return None if value is None else int(value)

    async def drop_expiry(self, event_ids: Sequence[EventID]) -> None:
        """Forget the timers of ``event_ids`` (kept by a legal hold, or gone)."""
        if event_ids:
            await self._db.execute(
                f"DELETE FROM event_expiry WHERE event_id IN ({placeholders(len(event_ids))})",
                *event_ids,
            )

    async def postpone_expiry(self, event_ids: Sequence[EventID], until_ts: int) -> None:
        """Look at the timers still set on ``event_ids`` (events a purge kept) again at
        ``until_ts``."""
        if event_ids:
            await self._db.execute(
                f"UPDATE event_expiry SET expires_ts = $1"
                f" WHERE event_id IN ({placeholders(len(event_ids), 2)})",
                until_ts,
                *event_ids,
            )

    async def redacted_unpurged(
        self, redacted_before_ts: int, after_stream: int | None, limit: int
    ) -> list[PurgeCandidate]:
        """Redacted timeline events whose original content is still stored and whose
        redaction was sent before ``redacted_before_ts``, in stream order."""
        rows = await self._db.fetch(
            f"SELECT {_CANDIDATE_COLUMNS} FROM events e"
            " JOIN events r ON r.event_id = e.redacted_by"
            " WHERE e.redacted_by IS NOT NULL AND e.content_purged_ts IS NULL"
            " AND r.origin_server_ts < $1 AND e.stream_ordering > $2"
            f" AND {_NOT_CURRENT_STATE} ORDER BY e.stream_ordering LIMIT $3",
            redacted_before_ts,
            _from(after_stream),
            limit,
        )
        return [_candidate(r) for r in rows]

    async def sent_by(
        self, sender: str, after_stream: int | None, limit: int
    ) -> list[PurgeCandidate]:
        """Timeline events ``sender`` sent whose content is still stored, not in current
        state, in stream order."""
        rows = await self._db.fetch(
            f"SELECT {_CANDIDATE_COLUMNS} FROM events e"
            " WHERE e.sender = $1 AND e.stream_ordering > $2 AND e.content_purged_ts IS NULL"
            f" AND {_NOT_CURRENT_STATE} ORDER BY e.stream_ordering LIMIT $3",
            sender,
            _from(after_stream),
            limit,
        )
        return [_candidate(r) for r in rows]

    async def member_events_about(
        self, user_id: str, after_stream: int | None, limit: int
    ) -> list[PurgeCandidate]:
        """``m.room.member`` events others sent about ``user_id`` (invites, kicks, bans:
        an invite carries the invitee's profile) whose content is still stored, not in
        current state, in stream order."""
        rows = await self._db.fetch(
            f"SELECT {_CANDIDATE_COLUMNS} FROM events e"
            " WHERE e.type = 'm.room.member' AND e.state_key = $1 AND e.sender <> $1"
            " AND e.stream_ordering > $2 AND e.content_purged_ts IS NULL"
            f" AND {_NOT_CURRENT_STATE} ORDER BY e.stream_ordering LIMIT $3",
            user_id,
            _from(after_stream),
            limit,
        )
        return [_candidate(r) for r in rows]

    async def media_uploaded_by(self, user_id: str) -> list[tuple[str, str, int]]:
        """``(origin, media_id, uploaded_ts)`` of the media ``user_id`` uploaded here
        (pending reservations count as uploaded at their creation)."""
        rows = await self._db.fetch(
            "SELECT origin, media_id, COALESCE(uploaded_ts, created_ts) AS ts FROM media"
            " WHERE user_id = $1",
            user_id,
        )
        return [(r["origin"], r["media_id"], int(r["ts"])) for r in rows]

    async def named_by_events(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``keys`` (origin, media_id) an event whose content is still stored
        names (erased and purged events name nothing)."""
        return await _named(self._db, keys)

    async def set_expiry(self, txn: Connection, rows: Sequence[tuple[EventID, str, int]]) -> None:
        """Record ``(event_id, room_id, expires_ts)`` timers, inside the events' commit."""
        if rows:
            await txn.executemany(
                "INSERT INTO event_expiry (event_id, room_id, expires_ts) VALUES ($1, $2, $3)"
                " ON CONFLICT (event_id) DO NOTHING",
                rows,
            )

    # -- deleting ------------------------------------------------------------------------

    async def purge(self, event_ids: Sequence[EventID], reason: str) -> PurgeResult:
        """Move ``event_ids`` out of the timeline, keeping only their redacted PDUs."""
        if not event_ids:
            return PurgeResult((), ())
        async with self._db.transaction() as txn:
            pdus = await _redacted_pdus(txn, event_ids)
            ids = list(pdus)
            if not ids:
                return PurgeResult((), ())
            await txn.executemany(
                "INSERT INTO event_outliers (event_id, room_id, status, reason, state_group, pdu)"
                " VALUES ($1, $2, 'purged', $3, $4, $5)"
                " ON CONFLICT (event_id) DO UPDATE SET status = 'purged',"
                " reason = excluded.reason, state_group = excluded.state_group,"
                " pdu = excluded.pdu",
                [(e, room, reason, group, pdu) for e, (room, group, pdu) in pdus.items()],
            )
            where = f"event_id IN ({placeholders(len(ids))})"
            top = await txn.fetchval(f"SELECT MAX(stream_ordering) FROM events WHERE {where}", *ids)
            await txn.execute(f"DELETE FROM events WHERE {where}", *ids)
            await forget_events(txn, self._db.dialect, ids)
            await forget_thread_events(txn, ids)
            await unindex_events(txn, ids)
            await txn.execute(f"DELETE FROM event_expiry WHERE {where}", *ids)
            media = await _release_media(txn, ids)
            # Last: the one row every purge writes is held only until the commit.
            if top is not None and int(top) > 0:
                await record_purged_events(txn, int(top))
        return PurgeResult(tuple(ids), media)

    async def rewrite_content(self, event_ids: Sequence[EventID], now_ts: int) -> PurgeResult:
        """Replace the stored PDUs of ``event_ids`` by their redacted forms."""
        if not event_ids:
            return PurgeResult((), ())
        async with self._db.transaction() as txn:
            pdus = await _redacted_pdus(txn, event_ids)
            ids = list(pdus)
            if not ids:
                return PurgeResult((), ())
            # Redacted content relates to nothing: the event leaves its relations (as a
            # redaction takes it out of them, storage.relations), and a reply its thread.
            await txn.executemany(
                "UPDATE events SET pdu = $2, content_purged_ts = $3, relates_to = NULL,"
                " rel_type = NULL WHERE event_id = $1",
                [(e, pdu, now_ts) for e, (_, _, pdu) in pdus.items()],
            )
            await forget_thread_events(txn, ids)
            await unindex_events(txn, ids)
            media = await _release_media(txn, ids)
        return PurgeResult(tuple(ids), media)

    async def release_space(self) -> None:
        """SQLite: move the write-ahead log into the database file and truncate it, so
        purged content (overwritten there: ``secure_delete``) leaves no copy in the log.
        PostgreSQL reclaims dead rows itself (autovacuum)."""
        if self._db.dialect == "sqlite":
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def rewrite_outliers(self, event_ids: Sequence[EventID], now_ts: int) -> PurgeResult:
        """Replace the stored PDUs of the outliers ``event_ids`` by their redacted forms
        (their status, and so how they count, is unchanged); current state is left alone."""
        if not event_ids:
            return PurgeResult((), ())
        async with self._db.transaction() as txn:
            rows = await txn.fetch(
                "SELECT o.event_id, o.pdu, r.room_version FROM event_outliers o"
                " JOIN rooms r ON r.room_id = o.room_id"
                f" WHERE o.event_id IN ({placeholders(len(event_ids))})"
                " AND o.status <> 'purged' AND o.content_purged_ts IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM current_state c WHERE c.event_id = o.event_id)",
                *event_ids,
            )
            updates = []
            for row in rows:
                version = KNOWN_ROOM_VERSIONS[row["room_version"]]
                redacted = redact(orjson.loads(row["pdu"]), version)
                updates.append((row["event_id"], orjson.dumps(redacted).decode(), now_ts))
            if updates:
                await txn.executemany(
                    "UPDATE event_outliers SET pdu = $2, content_purged_ts = $3"
                    " WHERE event_id = $1",
                    updates,
                )
        return PurgeResult(tuple(EventID(u[0]) for u in updates), ())


def _from(after_stream: int | None) -> int:
    # Backfilled history has negative stream positions.
    return -(2**62) if after_stream is None else after_stream


async def _redacted_pdus(
    txn: Connection, event_ids: Sequence[EventID]
) -> dict[EventID, tuple[str, int, str]]:
    """``event_id -> (room_id, state_group, redacted PDU JSON)`` for those of
    ``event_ids`` still in the timeline and not in current state (checked inside the
    transaction that changes them)."""
    rows = await txn.fetch(
        "SELECT e.event_id, e.room_id, e.state_group, e.pdu, r.room_version FROM events e"
        " JOIN rooms r ON r.room_id = e.room_id"
        f" WHERE e.event_id IN ({placeholders(len(event_ids))}) AND {_NOT_CURRENT_STATE}",
        *event_ids,
    )
    found = {}
    for row in rows:
        version = KNOWN_ROOM_VERSIONS[row["room_version"]]
        event_id = EventID(row["event_id"])
        pdu = Pdu(orjson.loads(row["pdu"]), event_id, version)
        redacted = orjson.dumps(redact(pdu.data, version)).decode()
        found[event_id] = (row["room_id"], int(row["state_group"]), redacted)
    return found


async def _release_media(
    txn: Connection, event_ids: Iterable[EventID]
) -> tuple[tuple[str, str], ...]:
    """Drop the media references of ``event_ids``; the media nothing names any more
    (no other event, no user's profile picture)."""
    ids = list(event_ids)
    where = f"event_id IN ({placeholders(len(ids))})"
    refs = {
        (r["origin"], r["media_id"])
        for r in await txn.fetch(f"SELECT origin, media_id FROM event_media WHERE {where}", *ids)
    }
    await txn.execute(f"DELETE FROM event_media WHERE {where}", *ids)
    if not refs:
        return ()
    keys = sorted(refs)
    still_named = await _named(txn, keys)
    avatars: set[str] = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        avatars |= {
            r["avatar_url"]
            for r in await txn.fetch(
                f"SELECT avatar_url FROM users WHERE avatar_url IN ({placeholders(len(chunk))})",
                *[f"mxc://{origin}/{media_id}" for origin, media_id in chunk],
            )
        }
    return tuple(
        key for key in keys if key not in still_named and f"mxc://{key[0]}/{key[1]}" not in avatars
    )


async def _named(conn: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of ``keys`` (origin, media_id) some stored event's content names."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        values = ", ".join(f"(${2 * i + 1}, ${2 * i + 2})" for i in range(len(chunk)))
        found |= {
            (r["origin"], r["media_id"])
            for r in await conn.fetch(
                "SELECT DISTINCT m.origin, m.media_id FROM event_media m"
                f" WHERE (m.origin, m.media_id) IN (VALUES {values})",
                *[part for key in chunk for part in key],
            )
        }
    return found
