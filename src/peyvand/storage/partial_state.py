"""Rooms joined with partial state (migration 028; Server-Server API, send_join v2 with
``omit_members``): which rooms, the join whose state is partial, the servers in the room
at the join; and completing the state once the full state at the join is known, each
completion numbered in a stream of its own (migration 031) that /sync reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from peyvand.events.pdu import StateKey
from peyvand.storage.database import Database
from peyvand.storage.events import write_current_state
from peyvand.storage.models import NewStateGroup, StateChange
from peyvand.types import EventID, RoomID, ServerName


@dataclass(frozen=True, slots=True)
class PartialStateRoom:
    room_id: RoomID
    join_event_id: EventID
    joined_via: ServerName
    servers: tuple[ServerName, ...]


@dataclass(frozen=True, slots=True)
class CompletedState:
    """What completing a room's state writes.

    ``missing``: the state at the join that the partial state lacked; it is added to
    every state group of the room from ``since_group`` on that holds a whole state (no
    base group): the groups built on them inherit it, and a group that set a key since
    keeps its own value. ``current``: the changes to current state (``StateChange``: a
    key without an event is removed), at ``stream_ordering``; ``new_group``: the room's
    new current group (holding the resolution of the forward extremities' states with
    the full state).
    ``failed``: state events received while partial that fail against the full state,
    each with what its key held before it: every state group of the room holding one
    holds that instead (nothing, for None), as if it had been rejected on receipt."""

    room_id: RoomID
    since_group: int
    missing: Mapping[StateKey, EventID]
    current: Sequence[StateChange]
    stream_ordering: int
    new_group: NewStateGroup
    failed: Mapping[EventID, EventID | None] = field(default_factory=dict)


class PartialStateStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_room(self, room: PartialStateRoom, now_ms: int) -> None:
        """Mark ``room`` partial (replacing an earlier mark for it)."""
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = $1", room.room_id)
            await txn.execute(
                "DELETE FROM partial_state_room_servers WHERE room_id = $1", room.room_id
            )
            await txn.execute(
                "INSERT INTO partial_state_rooms (room_id, join_event_id, joined_via, created_ts)"
                " VALUES ($1, $2, $3, $4)",
                room.room_id,
                room.join_event_id,
                room.joined_via,
                now_ms,
            )
            await txn.executemany(
                "INSERT INTO partial_state_room_servers (room_id, server_name) VALUES ($1, $2)",
                [(room.room_id, s) for s in dict.fromkeys(room.servers)],
            )

    async def rooms(self) -> list[PartialStateRoom]:
        """Every room still partial."""
        rows = await self._db.fetch(
            "SELECT room_id, join_event_id, joined_via FROM partial_state_rooms ORDER BY created_ts"
        )
        servers: dict[str, list[ServerName]] = {}
        for row in await self._db.fetch(
            "SELECT room_id, server_name FROM partial_state_room_servers ORDER BY server_name"
        ):
            servers.setdefault(row["room_id"], []).append(ServerName(row["server_name"]))
        return [
            PartialStateRoom(
                RoomID(r["room_id"]),
                EventID(r["join_event_id"]),
                ServerName(r["joined_via"]),
                tuple(servers.get(r["room_id"], ())),
            )
            for r in rows
        ]

    async def forget(self, room_id: RoomID) -> None:
        """Drop the mark (its join was never stored)."""
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = $1", room_id)
            await txn.execute("DELETE FROM partial_state_room_servers WHERE room_id = $1", room_id)

    async def max_completion(self) -> int:
        """The stream position of the latest completion (0: none yet)."""
        value = await self._db.fetchval("SELECT MAX(stream_id) FROM partial_state_completions")
        return int(value or 0)

    async def completed_between(self, since: int, until: int) -> set[RoomID]:
        """The rooms completed after stream position ``since``, up to ``until``."""
        rows = await self._db.fetch(
            "SELECT room_id FROM partial_state_completions WHERE stream_id > $1"
            " AND stream_id <= $2",
            since,
            until,
        )
        return {RoomID(r["room_id"]) for r in rows}

    async def complete(self, done: CompletedState) -> int:
        """Write the full state (see ``CompletedState``), drop the mark and number the
        completion, in one transaction; the completion's stream position. Callers
        complete one room at a time (the position is the stream's next)."""
        async with self._db.transaction() as txn:
            # First: a new current group holding a whole state gets the missing rows too.
            group = done.new_group.row
            await txn.execute(
                "INSERT INTO state_groups (state_group, room_id, seq, prev_group, base_group)"
                " VALUES ($1, $2, $3, $4, $5)",
                group.state_group,
                group.room_id,
                group.seq,
                group.prev_group,
                group.base_group,
            )
            await txn.executemany(
                "INSERT INTO state_group_deltas (state_group, type, state_key, event_id)"
                " VALUES ($1, $2, $3, $4)",
                [(group.state_group, k[0], k[1], e) for k, e in done.new_group.delta.items()],
            )
            await txn.execute(
                "UPDATE rooms SET current_state_group = $2 WHERE room_id = $1",
                done.room_id,
                group.state_group,
            )
            # Then the failed events leave every group (a child group's row naming one
            # takes its key's value before it; none before: the row goes).
            await txn.executemany(
                "UPDATE state_group_deltas SET event_id = $2 WHERE event_id = $1",
                [(e, before) for e, before in done.failed.items() if before is not None],
            )
            await txn.executemany(
                "DELETE FROM state_group_deltas WHERE event_id = $1",
                [(e,) for e, before in done.failed.items() if before is None],
            )
            # Not the new current group if it is a root (``group_holding``: the
            # resolution left keys without an event): it holds the whole resolved state,
            # and the keys it lacks stay out.
            whole = await txn.fetch(
                "SELECT state_group FROM state_groups WHERE room_id = $1"
                " AND base_group IS NULL AND state_group >= $2 AND state_group <> $3",
                done.room_id,
                done.since_group,
                group.state_group if group.prev_group is None else -1,
            )
            await txn.executemany(
                "INSERT INTO state_group_deltas (state_group, type, state_key, event_id)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (state_group, type, state_key) DO NOTHING",
                [
                    (row["state_group"], key[0], key[1], event_id)
                    for row in whole
                    for key, event_id in done.missing.items()
                ],
            )
            await write_current_state(
                txn,
                {
                    (done.room_id, key): (event_id, membership, done.stream_ordering)
                    for key, event_id, membership in done.current
                },
            )
            await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = $1", done.room_id)
            await txn.execute(
                "DELETE FROM partial_state_room_servers WHERE room_id = $1", done.room_id
            )
            position = int(
                await txn.fetchval(
                    "SELECT COALESCE(MAX(stream_id), 0) + 1 FROM partial_state_completions"
                )
            )
            await txn.execute(
                "INSERT INTO partial_state_completions (stream_id, room_id) VALUES ($1, $2)",
                position,
                done.room_id,
            )
            return position
