"""Events, rooms, room state (current and historical) and forward extremities.

Events are stored as their full federation PDU JSON. Historical state is kept as
Fenwick-style deltas (see migration 001): resolving a state group reads only the deltas
on its base chain, at most log2(number of state changes) of them, in one query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from typing import Any

import orjson

from peyvand.events.media_refs import media_references
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.storage.database import Connection, Database, Row, iter_chunks, placeholders
from peyvand.storage.models import (
    EventToPersist,
    NewStateGroup,
    OutlierRow,
    RoomRow,
    StateGroupRow,
    StoredEvent,
    other_current_group,
)
from peyvand.storage.redactions import (
    apply_pending_to_outliers,
    apply_redactions,
    effective_pending,
    keep_outlier_redactions,
    pending_among,
)
from peyvand.storage.search import index_events
from peyvand.storage.stream_positions import PURGED_EVENTS
from peyvand.types import EventID, RoomID, UserID

_EVENT_COLUMNS = (
    "event_id, room_id, stream_ordering, state_group, pdu, redacted_by, txn_device_id, txn_id,"
    " current_state_group"
)
_IN_LIST_CHUNK = 500
# A keyed state lookup names its state keys in the query up to this many.
_KEYED_STATE_KEYS = 500


def _stored_event(row: Row, room_versions: dict[str, str]) -> StoredEvent:
    version = KNOWN_ROOM_VERSIONS[room_versions[row["room_id"]]]
    pdu = Pdu(orjson.loads(row["pdu"]), EventID(row["event_id"]), version)
    txn = (row["txn_device_id"], row["txn_id"]) if row["txn_device_id"] is not None else None
    return StoredEvent(
        pdu,
        row["stream_ordering"],
        row["state_group"],
        row["redacted_by"],
        txn,
        row["current_state_group"],
    )


class EventStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # room_id -> room version identifier; immutable once a room exists.
        self._room_versions: dict[str, str] = {}

    # -- rooms ---------------------------------------------------------------------------

    async def get_room(self, room_id: RoomID) -> RoomRow | None:
        row = await self._db.fetchrow(
            "SELECT room_id, room_version, creator, is_public, created_ts FROM rooms"
            " WHERE room_id = $1",
            room_id,
        )
        if row is None:
            return None
        self._room_versions[room_id] = row["room_version"]
        return RoomRow(
            RoomID(row["room_id"]),
            row["room_version"],
            row["creator"],
            bool(row["is_public"]),
            row["created_ts"],
        )

    def remember_room_version(self, room_id: RoomID, room_version: str) -> None:
        """The version of a room whose row is about to be written (a room joined over
        federation: its events are read, e.g. by pre-commit hooks, in the same commit)."""
        self._room_versions[room_id] = room_version

    async def set_room_public(self, room_id: RoomID, is_public: bool) -> None:
        await self._db.execute(
            "UPDATE rooms SET is_public = $2 WHERE room_id = $1", room_id, is_public
        )

    async def get_public_room_ids(self) -> list[RoomID]:
        rows = await self._db.fetch("SELECT room_id FROM rooms WHERE is_public = $1", True)
        return [RoomID(r[0]) for r in rows]

    async def _fetch_in(
        self, select: str, values: Sequence[Any], *leading: Any
    ) -> AsyncIterator[list[Row]]:
        """The rows of ``select`` (ending in ``IN``; ``leading`` are its ``$1``, ``$2``,
        ... before the list) with an IN-list of ``values``: one query, and one list of
        rows, per ``_IN_LIST_CHUNK`` of them."""
        async for chunk in iter_chunks(values, _IN_LIST_CHUNK):
            yield await self._db.fetch(
                f"{select} ({placeholders(len(chunk), len(leading) + 1)})", *leading, *chunk
            )

    async def _ensure_room_versions(self, room_ids: Iterable[str]) -> None:
        missing = [r for r in set(room_ids) if r not in self._room_versions]
        async for rows in self._fetch_in(
            "SELECT room_id, room_version FROM rooms WHERE room_id IN", missing
        ):
            for row in rows:
                self._room_versions[row[0]] = row[1]

    # -- events --------------------------------------------------------------------------

    async def _events_from_rows(self, rows: Sequence[Row]) -> list[StoredEvent]:
        await self._ensure_room_versions(r["room_id"] for r in rows)
        return [_stored_event(r, self._room_versions) for r in rows]

    async def get_events(self, event_ids: Iterable[EventID]) -> dict[EventID, StoredEvent]:
        ids = list(set(event_ids))
        found: dict[EventID, StoredEvent] = {}
        async for rows in self._fetch_in(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id IN", ids
        ):
            for event in await self._events_from_rows(rows):
                found[event.pdu.event_id] = event
        return found

    async def get_room_events(
        self,
        room_id: RoomID,
        *,
        after: int | None,
        before: int | None,
        limit: int,
        newest_first: bool,
    ) -> list[StoredEvent]:
        """Events of ``room_id`` with ``after < stream_ordering <= before``, in the order asked."""
        conditions = ["room_id = $1"]
        args: list[Any] = [room_id]
        if after is not None:
            args.append(after)
            conditions.append(f"stream_ordering > ${len(args)}")
        if before is not None:
            args.append(before)
            conditions.append(f"stream_ordering <= ${len(args)}")
        args.append(limit)
        order = "DESC" if newest_first else "ASC"
        rows = await self._db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(conditions)}"
            f" ORDER BY stream_ordering {order} LIMIT ${len(args)}",
            *args,
        )
        return await self._events_from_rows(rows)

    async def get_events_in_range(
        self, after: int, up_to: int, limit: int, *, skip: tuple[int, int, int] | None = None
    ) -> list[StoredEvent]:
        """Events of every room in ``(after, up_to]``, in stream order, at most ``limit``
        (a process following another's writes: ``services.timeline.event_follower``).
        ``skip`` (since, count, index): leave out the positions above ``since`` equal to
        ``index`` modulo ``count`` (one of several event writers' own, not read back)."""
        if skip is None:
            rows = await self._db.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_ordering > $1"
                " AND stream_ordering <= $2 ORDER BY stream_ordering LIMIT $3",
                after,
                up_to,
                limit,
            )
        else:
            since, count, index = skip
            rows = await self._db.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_ordering > $1"
                " AND stream_ordering <= $2"
                " AND NOT (stream_ordering > $4 AND stream_ordering % $5 = $6)"
                " ORDER BY stream_ordering LIMIT $3",
                after,
                up_to,
                limit,
                since,
                count,
                index,
            )
        return await self._events_from_rows(rows)

    async def current_state_set_between(
        self, after: int, up_to: int
    ) -> list[tuple[StateKey, EventID, str | None, int]]:
        """The current state rows last set by an event in ``(after, up_to]``: (key,
        event, membership, the setting event's position)."""
        rows = await self._db.fetch(
            "SELECT type, state_key, event_id, membership, stream_ordering"
            " FROM current_state WHERE stream_ordering > $1 AND stream_ordering <= $2",
            after,
            up_to,
        )
        return [
            (
                (r["type"], r["state_key"]),
                EventID(r["event_id"]),
                r["membership"],
                int(r["stream_ordering"]),
            )
            for r in rows
        ]

    async def current_state_removed_between(
        self, after: int, up_to: int
    ) -> list[tuple[StateKey, int]]:
        """The keys last removed from current state (a state reset) by an event in
        ``(after, up_to]``: (key, the removing event's position)."""
        rows = await self._db.fetch(
            "SELECT type, state_key, stream_ordering FROM current_state_removals"
            " WHERE stream_ordering > $1 AND stream_ordering <= $2",
            after,
            up_to,
        )
        return [((r["type"], r["state_key"]), int(r["stream_ordering"])) for r in rows]

    async def current_state_positions(
        self, keys: Collection[tuple[RoomID, StateKey]]
    ) -> dict[tuple[RoomID, StateKey], int]:
        """The position of the event that last set each of ``keys`` of current state, or
        for a key no longer in it, of the one that last removed it (a state reset); a
        key never set is left out."""
        wanted = set(keys)
        found: dict[tuple[RoomID, StateKey], int] = {}
        state_keys = list({key[1] for _, key in wanted})
        for table in ("current_state_removals", "current_state"):
            async for rows in self._fetch_in(
                f"SELECT room_id, type, state_key, stream_ordering FROM {table} WHERE state_key IN",
                state_keys,
            ):
                for r in rows:
                    found_key = (RoomID(r["room_id"]), (r["type"], r["state_key"]))
                    if found_key in wanted:
                        found[found_key] = int(r["stream_ordering"])
        return found

    async def get_replaced_state(
        self, event_ids: Iterable[EventID]
    ) -> dict[EventID, EventID | None]:
        """For each of ``event_ids`` stored in the timeline, the state event it replaced
        (None: a message, or the first event of its key); see migration 034."""
        ids = list(set(event_ids))
        found: dict[EventID, EventID | None] = {}
        async for rows in self._fetch_in(
            "SELECT event_id, replaces_state FROM events WHERE event_id IN", ids
        ):
            for row in rows:
                replaced = row["replaces_state"]
                found[EventID(row["event_id"])] = EventID(replaced) if replaced else None
        return found

    async def get_rooms_with_events_since(
        self, room_ids: Sequence[RoomID], since: int, until: int
    ) -> set[RoomID]:
        """The subset of ``room_ids`` with an event in ``(since, until]``."""
        found: set[RoomID] = set()
        async for rows in self._fetch_in(
            "SELECT DISTINCT room_id FROM events WHERE stream_ordering > $1"
            " AND stream_ordering <= $2 AND room_id IN",
            room_ids,
            since,
            until,
        ):
            found.update(RoomID(r[0]) for r in rows)
        return found

    async def get_last_positions_of_types(
        self, room_ids: Sequence[RoomID], event_types: Sequence[str] | None, until: int
    ) -> dict[RoomID, int]:
        """Each room's newest position at or before ``until`` holding an event of one of
        ``event_types`` (sliding sync's ``bump_stamp``), or of any type when None (its
        order of rooms); rooms with none are left out.
        Backfilled history (negative positions) never counts. Each room's events are
        walked from the newest down ``events_room_stream`` until one matches, so a busy
        room costs its few newest events, not its history."""
        found: dict[RoomID, int] = {}
        types = list(event_types) if event_types is not None else []
        types_in = (
            f" AND e.type IN ({placeholders(len(types), 2)})" if event_types is not None else ""
        )
        async for rows in self._fetch_in(
            "SELECT r.room_id, (SELECT e.stream_ordering FROM events e"
            " WHERE e.room_id = r.room_id AND e.stream_ordering > 0"
            f" AND e.stream_ordering <= $1{types_in}"
            " ORDER BY e.stream_ordering DESC LIMIT 1) FROM rooms r WHERE r.room_id IN",
            room_ids,
            until,
            *types,
        ):
            found.update((RoomID(r[0]), int(r[1])) for r in rows if r[1] is not None)
        return found

    async def get_txn_event_id(self, user_id: str, device_id: str, txn_id: str) -> EventID | None:
        value = await self._db.fetchval(
            "SELECT event_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
            user_id,
            device_id,
            txn_id,
        )
        return EventID(value) if value is not None else None

    async def get_max_stream_ordering(self) -> int:
        """The highest position used in the event stream (events and remote invites, and
        purged events: ``stream_positions.PURGED_EVENTS``)."""
        value = await self._db.fetchval(
            "SELECT MAX(m) FROM (SELECT MAX(stream_ordering) AS m FROM events"
            " UNION ALL SELECT MAX(stream_ordering) AS m FROM remote_invites"
            " UNION ALL SELECT MAX(position) AS m FROM stream_positions WHERE stream = $1)"
            " AS positions",
            PURGED_EVENTS,
        )
        return int(value or 0)

    async def get_min_stream_ordering(self) -> int:
        """The lowest position used (negative once history has been backfilled)."""
        value = await self._db.fetchval("SELECT MIN(stream_ordering) FROM events")
        return int(value or 0)

    async def get_max_depth(self, event_ids: Sequence[EventID]) -> int:
        """The greatest depth among ``event_ids``, timeline or not (a room's forward
        extremity can be a purged event, kept outside the timeline)."""
        if not event_ids:
            return 0
        rows = await self._db.fetch(
            "SELECT event_id, depth FROM events"
            f" WHERE event_id IN ({placeholders(len(event_ids))})",
            *event_ids,
        )
        depths = [int(row["depth"]) for row in rows]
        elsewhere = set(event_ids) - {row["event_id"] for row in rows}
        if elsewhere:
            depths += [row.pdu.depth for row in (await self.get_outliers(elsewhere)).values()]
        return max(depths, default=0)

    async def get_max_state_group(self) -> int:
        value = await self._db.fetchval("SELECT MAX(state_group) FROM state_groups")
        return int(value or 0)

    # -- membership ----------------------------------------------------------------------

    async def get_memberships_for_user(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        """room_id -> (membership, stream_ordering of that membership) from current state."""
        rows = await self._db.fetch(
            "SELECT room_id, membership, stream_ordering FROM current_state"
            " WHERE state_key = $1 AND type = 'm.room.member'",
            user_id,
        )
        return {RoomID(r[0]): (r[1], r[2]) for r in rows}

    async def get_memberships_at(
        self, user_id: UserID, room_ids: Sequence[RoomID], position: int
    ) -> dict[RoomID, tuple[str, int]]:
        """room_id -> (membership, stream_ordering) of ``user_id``'s newest membership
        event in each of ``room_ids`` at or before ``position`` (rooms with none are left
        out): the membership a sync whose token is ``position`` must go by."""
        found: dict[RoomID, tuple[str, int]] = {}
        async for rows in self._fetch_in(
            f"SELECT {_EVENT_COLUMNS} FROM events"
            " WHERE type = 'm.room.member' AND state_key = $1"
            " AND stream_ordering = (SELECT MAX(m.stream_ordering) FROM events m"
            " WHERE m.room_id = events.room_id AND m.type = 'm.room.member'"
            " AND m.state_key = $1 AND m.stream_ordering > 0 AND m.stream_ordering <= $2)"
            " AND room_id IN",
            room_ids,
            user_id,
            position,
        ):
            for event in await self._events_from_rows(rows):
                if event.pdu.membership is not None:
                    found[event.pdu.room_id] = (event.pdu.membership, event.stream_ordering)
        return found

    # -- current state and extremities ---------------------------------------------------

    async def get_current_state_ids(self, room_id: RoomID) -> dict[StateKey, EventID]:
        rows = await self._db.fetch(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = $1", room_id
        )
        return {(r[0], r[1]): EventID(r[2]) for r in rows}

    async def get_current_state_of_types(
        self, room_ids: Sequence[RoomID], event_types: Sequence[str]
    ) -> dict[RoomID, dict[StateKey, EventID]]:
        """The current state of ``event_types`` in each of ``room_ids``, in one chunked
        query (sliding sync's list filters: create and encryption events)."""
        found: dict[RoomID, dict[StateKey, EventID]] = {}
        async for rows in self._fetch_in(
            "SELECT room_id, type, state_key, event_id FROM current_state"
            f" WHERE type IN ({placeholders(len(event_types))}) AND room_id IN",
            room_ids,
            *event_types,
        ):
            for r in rows:
                found.setdefault(RoomID(r[0]), {})[(r[1], r[2])] = EventID(r[3])
        return found

    async def get_member_event_ids(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, EventID]:
        """The user's current member event in each of ``room_ids`` that has one, in one
        chunked query (sliding sync: who sent a leave or an invite)."""
        found: dict[RoomID, EventID] = {}
        async for rows in self._fetch_in(
            "SELECT room_id, event_id FROM current_state WHERE type = 'm.room.member'"
            " AND state_key = $1 AND room_id IN",
            room_ids,
            user_id,
        ):
            found.update((RoomID(r[0]), EventID(r[1])) for r in rows)
        return found

    async def get_current_memberships(self, room_id: RoomID) -> dict[UserID, str]:
        """user -> membership in the room's current state, in the order their member
        events were made current (the heroes are the first members: "Room summary")."""
        rows = await self._db.fetch(
            "SELECT state_key, membership, stream_ordering FROM current_state"
            " WHERE room_id = $1 AND type = 'm.room.member'",
            room_id,
        )
        # Sorted here: code point order whatever the database's collation.
        return {UserID(r[0]): r[1] for r in sorted(rows, key=lambda r: (r[2], r[0]))}

    async def get_forward_extremities(self, room_id: RoomID) -> list[EventID]:
        rows = await self._db.fetch(
            "SELECT event_id FROM forward_extremities WHERE room_id = $1", room_id
        )
        return [EventID(r[0]) for r in rows]

    # -- historical state ----------------------------------------------------------------

    async def get_state_group_rows(self, groups: Iterable[int]) -> dict[int, StateGroupRow]:
        ids = list(set(groups))
        found: dict[int, StateGroupRow] = {}
        async for rows in self._fetch_in(
            "SELECT state_group, room_id, seq, prev_group, base_group FROM state_groups"
            " WHERE state_group IN",
            ids,
        ):
            for r in rows:
                found[r[0]] = StateGroupRow(r[0], RoomID(r[1]), r[2], r[3], r[4])
        return found

    async def get_latest_state_group(self, room_id: RoomID) -> StateGroupRow | None:
        r = await self._db.fetchrow(
            "SELECT state_group, room_id, seq, prev_group, base_group FROM state_groups"
            " WHERE room_id = $1 ORDER BY seq DESC, state_group DESC LIMIT 1",
            room_id,
        )
        return None if r is None else StateGroupRow(r[0], RoomID(r[1]), r[2], r[3], r[4])

    async def get_state_group_deltas(
        self, groups: Sequence[int], keys: Sequence[StateKey] | None = None
    ) -> dict[int, dict[StateKey, EventID]]:
        """The stored deltas of ``groups``, optionally only for some ``(type, state_key)``."""
        result: dict[int, dict[StateKey, EventID]] = {g: {} for g in groups}
        if not groups:
            return result
        args: list[Any] = list(groups)
        sql = (
            "SELECT state_group, type, state_key, event_id FROM state_group_deltas"
            f" WHERE state_group IN ({placeholders(len(groups))})"
        )
        if keys is not None:
            types = sorted({k[0] for k in keys})
            sql += f" AND type IN ({placeholders(len(types), len(args) + 1)})"
            args.extend(types)
            state_keys = sorted({k[1] for k in keys})
            if len(state_keys) <= _KEYED_STATE_KEYS:
                # By the primary key, not every member row of a big room's deltas.
                sql += f" AND state_key IN ({placeholders(len(state_keys), len(args) + 1)})"
                args.extend(state_keys)
        wanted = set(keys) if keys is not None else None
        for r in await self._db.fetch(sql, *args):
            key = (r[1], r[2])
            if wanted is None or key in wanted:
                result[r[0]][key] = EventID(r[3])
        return result

    # -- writes --------------------------------------------------------------------------

    async def get_outliers(self, event_ids: Iterable[EventID]) -> dict[EventID, OutlierRow]:
        """Events held outside the timeline (outliers, rejected, soft-failed), by ID."""
        ids = list(set(event_ids))
        found: dict[EventID, OutlierRow] = {}
        async for rows in self._fetch_in(
            "SELECT event_id, room_id, status, reason, state_group, pdu, redacted_by"
            " FROM event_outliers WHERE event_id IN",
            ids,
        ):
            await self._ensure_room_versions(row["room_id"] for row in rows)
            for row in rows:
                version = KNOWN_ROOM_VERSIONS[self._room_versions[row["room_id"]]]
                event_id = EventID(row["event_id"])
                rejected = (row["reason"] or "rejected") if row["status"] == "rejected" else None
                pdu = Pdu(orjson.loads(row["pdu"]), event_id, version, rejected)
                found[event_id] = OutlierRow(
                    pdu,
                    row["status"],
                    row["reason"],
                    row["state_group"],
                    redacted_by=row["redacted_by"],
                )
        return found

    async def persist_outliers(self, rows: Sequence[OutlierRow]) -> None:
        """Store events outside the timeline, with any state groups they need; an event
        already stored (in the timeline or as an outlier) is left as it is. A redaction
        received before an event applies to it now (``storage.redactions``)."""
        async with self._db.transaction() as txn:
            await _insert_state_groups(
                txn, [r.new_state_group for r in rows if r.new_state_group is not None]
            )
            await txn.executemany(
                "INSERT INTO event_outliers (event_id, room_id, status, reason, state_group, pdu)"
                " SELECT $1, $2, $3, $4, $5, $6"
                " WHERE NOT EXISTS (SELECT 1 FROM events WHERE event_id = $1)"
                " ON CONFLICT (event_id) DO NOTHING",
                [
                    (
                        r.pdu.event_id,
                        r.pdu.room_id,
                        r.status,
                        r.reason,
                        r.state_group,
                        orjson.dumps(dict(r.pdu.data)).decode(),
                    )
                    for r in rows
                ],
            )
            await apply_pending_to_outliers(txn, [r.pdu for r in rows])

    async def redaction_on_arrival(self, pdu: Pdu) -> EventID | None:
        """The redaction an event joining the timeline arrives with: the one applied to it
        while it was held outside the timeline, else a redaction received before it that
        takes effect on it (``storage.redactions``)."""
        outlier = (await self.get_outliers([pdu.event_id])).get(pdu.event_id)
        if outlier is not None and outlier.redacted_by is not None:
            return outlier.redacted_by
        return (await effective_pending(self._db, [pdu])).get(pdu.event_id)

    async def pending_redactions_among(self, event_ids: Iterable[EventID]) -> set[EventID]:
        """The redactions among ``event_ids`` not in effect (not shown to clients)."""
        return await pending_among(self._db, event_ids)

    async def get_current_state_group(self, room_id: RoomID) -> StateGroupRow | None:
        """The group of the room's current state (its newest group for older rooms)."""
        row = await self._db.fetchrow(
            "SELECT g.state_group, g.room_id, g.seq, g.prev_group, g.base_group"
            " FROM rooms r JOIN state_groups g ON g.state_group = r.current_state_group"
            " WHERE r.room_id = $1",
            room_id,
        )
        if row is None:
            return await self.get_latest_state_group(room_id)
        return StateGroupRow(row[0], RoomID(row[1]), row[2], row[3], row[4])

    async def persist_events(self, txn: Connection, batch: Sequence[EventToPersist]) -> None:
        """Write one group commit: events, txn ids, state groups, current state, extremities.

        Runs inside the caller's transaction; one statement per table for the whole batch.
        """
        rooms_created = [e.new_room for e in batch if e.new_room is not None]
        if rooms_created:
            await txn.executemany(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                " VALUES ($1, $2, $3, $4, $5)",
                [
                    (r.room_id, r.room_version, r.creator, r.is_public, r.created_ts)
                    for r in rooms_created
                ],
            )
        await txn.executemany(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, state_group, relates_to, rel_type, pdu, txn_device_id,"
            " txn_id, redacted_by, replaces_state, current_state_group)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,"
            " $17)",
            [
                (
                    e.stream_ordering,
                    e.pdu.event_id,
                    e.pdu.room_id,
                    e.pdu.type,
                    e.pdu.state_key,
                    e.pdu.sender,
                    e.pdu.depth,
                    e.pdu.origin_server_ts,
                    e.state_group,
                    e.relates_to,
                    e.rel_type,
                    orjson.dumps(dict(e.pdu.data)).decode(),
                    e.txn[1] if e.txn is not None else None,
                    e.txn[2] if e.txn is not None else None,
                    e.redacted_by,
                    e.replaces_state,
                    other_current_group(e),
                )
                for e in batch
            ],
        )
        media_rows = [
            (e.pdu.event_id, origin, media_id)
            for e in batch
            for origin, media_id in media_references(e.pdu.content)
        ]
        if media_rows:
            await txn.executemany(
                "INSERT INTO event_media (event_id, origin, media_id) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                media_rows,
            )
        txns = [(*e.txn, e.pdu.event_id) for e in batch if e.txn is not None]
        if txns:
            await txn.executemany(
                "INSERT INTO event_txns (user_id, device_id, txn_id, event_id)"
                " VALUES ($1, $2, $3, $4)",
                txns,
            )
        await _insert_state_groups(
            txn,
            [
                group
                for e in batch
                for group in (
                    *e.extra_state_groups,
                    *((e.new_state_group,) if e.new_state_group is not None else ()),
                )
            ],
        )
        await _write_current_state(txn, batch)
        current_groups = {
            e.pdu.room_id: e.current_state_group for e in batch if e.current_state_group is not None
        }
        if current_groups:
            await txn.executemany(
                "UPDATE rooms SET current_state_group = $2 WHERE room_id = $1",
                list(current_groups.items()),
            )
        await keep_outlier_redactions(txn, batch)
        await txn.execute(
            f"DELETE FROM event_outliers WHERE event_id IN ({placeholders(len(batch))})",
            *[e.pdu.event_id for e in batch],
        )
        await apply_redactions(txn, batch)
        await index_events(txn, batch)
        last_extremities: dict[RoomID, tuple[EventID, ...]] = {}
        for e in batch:
            last_extremities[e.pdu.room_id] = e.new_extremities
        rooms = list(last_extremities)
        await txn.execute(
            f"DELETE FROM forward_extremities WHERE room_id IN ({placeholders(len(rooms))})",
            *rooms,
        )
        await txn.executemany(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)",
            [(room, ev) for room, evs in last_extremities.items() for ev in evs],
        )


async def _write_current_state(txn: Connection, batch: Sequence[EventToPersist]) -> None:
    """Each event's changes to its room's current state, in order (the last change of a
    key in the batch is what stands)."""
    changes: dict[tuple[RoomID, StateKey], tuple[EventID | None, str | None, int]] = {}
    for e in batch:
        room_id = e.pdu.room_id
        if e.current_state_changes is not None:
            for key, event_id, membership in e.current_state_changes:
                changes[(room_id, key)] = (event_id, membership, e.stream_ordering)
        elif e.pdu.is_state() and e.pdu.state_key is not None:
            membership = e.pdu.membership if e.pdu.type == "m.room.member" else None
            changes[(room_id, e.pdu.state_tuple)] = (e.pdu.event_id, membership, e.stream_ordering)
    await write_current_state(txn, changes)


async def write_current_state(
    txn: Connection,
    changes: Mapping[tuple[RoomID, StateKey], tuple[EventID | None, str | None, int]],
) -> None:
    """Current state rows: each (room, key) set to (event, membership, position of the
    event that set it) upserted (and no longer logged as removed); with no event (a
    state reset) deleted, and the removal logged in ``current_state_removals`` at that
    position for the processes following the events stream."""
    set_rows = [
        (room_id, key[0], key[1], event_id, membership, position)
        for (room_id, key), (event_id, membership, position) in changes.items()
        if event_id is not None
    ]
    removed = [
        (room_id, key[0], key[1], position)
        for (room_id, key), (event_id, _, position) in changes.items()
        if event_id is None
    ]
    if set_rows:
        await txn.executemany(
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership,"
            " stream_ordering) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (room_id, type, state_key) DO UPDATE SET"
            " event_id = excluded.event_id, membership = excluded.membership,"
            " stream_ordering = excluded.stream_ordering",
            set_rows,
        )
        # A key set again is in current state alone: a completion sets keys at an older
        # position than their removal, which must not then be read as after the set.
        # Removals are rare: one look at the rooms first (not a statement per row of a
        # join's whole state).
        rooms = list({row[0] for row in set_rows})
        if await txn.fetchval(
            "SELECT 1 FROM current_state_removals"
            f" WHERE room_id IN ({placeholders(len(rooms))}) LIMIT 1",
            *rooms,
        ):
            await txn.executemany(
                "DELETE FROM current_state_removals"
                " WHERE room_id = $1 AND type = $2 AND state_key = $3",
                [row[:3] for row in set_rows],
            )
    if removed:
        await txn.executemany(
            "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
            [row[:3] for row in removed],
        )
        await txn.executemany(
            "INSERT INTO current_state_removals (room_id, type, state_key, stream_ordering)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, type, state_key) DO UPDATE SET"
            " stream_ordering = excluded.stream_ordering",
            removed,
        )


async def _insert_state_groups(txn: Connection, groups: Sequence[NewStateGroup]) -> None:
    if not groups:
        return
    await txn.executemany(
        "INSERT INTO state_groups (state_group, room_id, seq, prev_group, base_group)"
        " VALUES ($1, $2, $3, $4, $5)",
        [
            (g.row.state_group, g.row.room_id, g.row.seq, g.row.prev_group, g.row.base_group)
            for g in groups
        ],
    )
    await txn.executemany(
        "INSERT INTO state_group_deltas (state_group, type, state_key, event_id)"
        " VALUES ($1, $2, $3, $4)",
        [
            (g.row.state_group, key[0], key[1], event_id)
            for g in groups
            for key, event_id in g.delta.items()
        ],
    )
