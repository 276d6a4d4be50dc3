"""Historical state as Fenwick deltas (services.room_state): every group resolves to the
exact state after its change, rows stay O(n log n) in the number of changes, and any
group resolves from at most log2(n) + 1 deltas."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peyvand.events.pdu import StateKey
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.services.timeline.stream_tracker import Lane
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import NewStateGroup
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import EventID, RoomID

ROOM = RoomID("!room")
KEYS: list[StateKey] = [("m.room.member", f"@u{i}:x") for i in range(12)] + [
    ("m.room.topic", ""),
    ("m.room.name", ""),
]


async def _write(db: SqliteDatabase, group: NewStateGroup) -> None:
    async with db.transaction() as txn:
        row = group.row
        await txn.execute(
            "INSERT INTO state_groups (state_group, room_id, seq, prev_group, base_group)"
            " VALUES ($1, $2, $3, $4, $5)",
            row.state_group,
            row.room_id,
            row.seq,
            row.prev_group,
            row.base_group,
        )
        await txn.executemany(
            "INSERT INTO state_group_deltas (state_group, type, state_key, event_id)"
            " VALUES ($1, $2, $3, $4)",
            [(row.state_group, k[0], k[1], v) for k, v in group.delta.items()],
        )


async def _build_history(
    path: Path, changes: list[tuple[int, int]]
) -> tuple[SqliteDatabase, list[tuple[int, dict[StateKey, EventID]]]]:
    """Apply ``changes`` (key index, value) one group each; return groups and true states."""
    db = await SqliteDatabase.open(str(path))
    await run_migrations(db)
    state = StateService(EventStore(db))
    await state.start()
    current: dict[StateKey, EventID] = {KEYS[0]: EventID("$create")}
    first = state.root_state_group(ROOM, dict(current))
    await _write(db, first)
    snapshot = RoomSnapshot(ROOM, ROOM_V12, dict(current), {}, [], 1, first.row)
    history = [(first.row.state_group, dict(current))]
    for n, (key_index, value) in enumerate(changes):
        change = {KEYS[key_index]: EventID(f"${n}-{value}")}
        group = await state.new_state_group(snapshot, change)
        await _write(db, group)
        current.update(change)
        snapshot.state_group = group.row
        history.append((group.row.state_group, dict(current)))
    return db, history


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, len(KEYS) - 1), st.integers(0, 3)), max_size=70))
async def test_every_group_resolves_to_its_state(
    tmp_path: Path, changes: list[tuple[int, int]]
) -> None:
    db, history = await _build_history(
        tmp_path / f"h{len(changes)}-{hash(tuple(changes))}.db", changes
    )
    try:
        # A fresh service: nothing cached, everything read back from the database.
        fresh = StateService(EventStore(db))
        for group, expected in history:
            assert await fresh.state_ids_at_group(group) == expected
            key = KEYS[len(expected) % len(KEYS)]
            assert await fresh.state_ids_at_group(group, [key]) == (
                {key: expected[key]} if key in expected else {}
            )
    finally:
        await db.close()


async def test_rows_grow_with_changes_not_events_times_state(tmp_path: Path) -> None:
    """Many members joining one by one: rows are O(n log n), never O(n^2)."""
    db = await SqliteDatabase.open(str(tmp_path / "big.db"))
    await run_migrations(db)
    try:
        state = StateService(EventStore(db))
        await state.start()
        first = state.root_state_group(ROOM, {("m.room.create", ""): EventID("$c")})
        await _write(db, first)
        snapshot = RoomSnapshot(ROOM, ROOM_V12, {}, {}, [], 1, first.row)
        n = 1024
        for i in range(n):
            group = await state.new_state_group(
                snapshot, {("m.room.member", f"@u{i}:x"): EventID(f"$m{i}")}
            )
            await _write(db, group)
            snapshot.state_group = group.row
        rows = await db.fetchval("SELECT COUNT(*) FROM state_group_deltas")
        # A snapshot per change would be n^2 / 2 = 524,288 rows.
        assert rows <= n * (math.log2(n) / 2 + 2)
        fresh = StateService(EventStore(db))
        full = await fresh.state_ids_at_group(snapshot.state_group.state_group)
        assert len(full) == n + 1
        chain = await fresh._chain(snapshot.state_group.state_group)
        assert len(chain) <= math.log2(n + 1) + 1
    finally:
        await db.close()


async def test_a_writer_allocates_the_group_ids_of_its_lane(tmp_path: Path) -> None:
    """Each event writer of a deployment numbers new state groups in its own residue, above
    every stored group (issue 21): two writers never pick the same ID."""
    db = await SqliteDatabase.open(str(tmp_path / "groups.db"))
    await run_migrations(db)
    try:
        await _write(db, StateService(EventStore(db)).root_state_group(ROOM, {}))
        # root_state_group of an unstarted service numbers from 0.
        writers = [StateService(EventStore(db), lane=Lane(i, 3)) for i in range(3)]
        for writer in writers:
            await writer.start()
        ids = [[writer.allocate_group_id() for _ in range(4)] for writer in writers]
        assert ids == [[3, 6, 9, 12], [1, 4, 7, 10], [2, 5, 8, 11]]
    finally:
        await db.close()


async def test_a_state_that_lost_a_key_is_a_root_its_descendants_do_not_copy(
    tmp_path: Path,
) -> None:
    """A state is derived from the candidate group it differs least from; one without a
    key each candidate has (a state reset) cannot be a delta (deltas only add or
    replace): it is a new root holding the whole state, and the groups after it store
    only what changed since, never the root's state again."""
    db = await SqliteDatabase.open(str(tmp_path / "reset.db"))
    await run_migrations(db)
    try:
        state = StateService(EventStore(db))
        await state.start()
        whole: dict[StateKey, EventID] = {("m.room.create", ""): EventID("$c")}
        whole.update({("m.room.member", f"@m{i}:x"): EventID(f"$m{i}") for i in range(500)})
        first = state.root_state_group(ROOM, whole)
        await _write(db, first)
        changed = {**whole, ("m.room.name", ""): EventID("$n")}
        child = await state.group_holding(changed, [(first.row, whole)])
        assert child.row.prev_group == first.row.state_group
        assert child.delta == {("m.room.name", ""): EventID("$n")}
        nearer = await state.group_holding(changed, [(first.row, whole), (child.row, changed)])
        assert nearer.row.prev_group == child.row.state_group
        await _write(db, child)
        reset = {k: e for k, e in changed.items() if k != ("m.room.member", "@m0:x")}
        root = await state.group_holding(reset, [(child.row, changed), (first.row, whole)])
        assert (root.row.prev_group, root.row.base_group) == (None, None)
        assert root.delta == reset
        await _write(db, root)
        rows_before = await db.fetchval("SELECT COUNT(*) FROM state_group_deltas")
        snapshot = RoomSnapshot(ROOM, ROOM_V12, dict(reset), {}, [], 1, root.row)
        expected = dict(reset)
        history = [(root.row.state_group, dict(expected))]
        n = 64
        for i in range(n):
            change = {("m.room.member", f"@n{i}:x"): EventID(f"$n{i}")}
            group = await state.new_state_group(snapshot, change)
            await _write(db, group)
            snapshot.state_group = group.row
            expected.update(change)
            history.append((group.row.state_group, dict(expected)))
        added = await db.fetchval("SELECT COUNT(*) FROM state_group_deltas") - rows_before
        assert added <= n * (math.log2(n) / 2 + 2)
        fresh = StateService(EventStore(db))
        for group_id, at in history:
            assert await fresh.state_ids_at_group(group_id) == at
        assert await fresh.state_ids_at_group(child.row.state_group) == changed
    finally:
        await db.close()
